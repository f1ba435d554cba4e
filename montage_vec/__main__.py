from montage_vec.cli import main

main()
