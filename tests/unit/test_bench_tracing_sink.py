"""`python -m bench --tracing`: the receiver takes real OTLP/HTTP exports, and the variables
it sets for the block are gone after it."""

from __future__ import annotations

import os

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from bench.tracing_sink import tracing_to_a_discarding_receiver, tracing_variables


def test_spans_exported_to_the_receiver_are_counted_and_the_variables_restored() -> None:
    before = tracing_variables(os.environ)
    with tracing_to_a_discarding_receiver() as exports:
        variables = tracing_variables(os.environ)
        assert variables["OTEL_TRACES_EXPORTER"] == "otlp"
        # The exporter reads the endpoint from the environment, as a service's would.
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
        with provider.get_tracer(__name__).start_as_current_span("one"):
            pass
        provider.shutdown()
        assert exports.requests == 1
        assert exports.bytes > 0
    assert tracing_variables(os.environ) == before
