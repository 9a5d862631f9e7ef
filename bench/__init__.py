"""The benchmark: this project beside a plain pika publisher, Dramatiq and Celery, in one run.

`python -m bench` (or `make bench`) measures publishing, delivering welcome emails, end-to-end
latency and the worker's memory against one broker, each section in a private virtual host,
prints a table and writes `bench/results/latest.json`. See docs/PERFORMANCE.md.
"""
