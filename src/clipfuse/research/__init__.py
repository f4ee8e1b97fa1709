"""Research tooling beside the library: the resumable experiment runner and its reports
(:mod:`clipfuse.research.experiments`, ``clipfuse experiment``) and the benchmark
(:mod:`clipfuse.research.bench`, ``clipfuse bench``). Only the command line imports it."""
