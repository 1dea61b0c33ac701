"""Developer tools kept outside the shipped package: benchmarks, synthetic populations, the headless browser."""
