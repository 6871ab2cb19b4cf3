"""The pure-Python domain of show-your-work traces: task generators, worked arithmetic,
answer parsing and scoring. No JAX, no file I/O: stages and scripts import it."""
