"""montage-vec: set-based, vectorized generation of check-in montages."""
