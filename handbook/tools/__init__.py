"""Tools for benchmarks, tests and scale estimates — not a stage of the recipe: measuring runs
(:mod:`.measure`), memory and time at the paper's sizes (:mod:`.memory`), synthetic data and random-init
models (:mod:`.synthetic`), a local llama.cpp server (:mod:`.serving`)."""
