"""`python -m benchmarks ...`: see benchmarks/README.md."""

from benchmarks.orchestrate import main

main()
