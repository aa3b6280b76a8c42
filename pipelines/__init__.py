"""pipelines: the command line, and the composition of the stages into one run."""
