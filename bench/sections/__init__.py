"""One module per benchmark section; each returns a `bench.results.Section`."""
