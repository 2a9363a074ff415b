"""plauder's benchmark: a real server process driven by separate load-generator processes."""
