"""`python -m bench`: run the benchmark (see `python -m bench --help`)."""

from bench.cli import main

# The guard matters: the SMTP sink's process is started by "spawn", which imports the main
# module again in the child.
if __name__ == "__main__":
    raise SystemExit(main())
