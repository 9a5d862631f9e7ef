"""OpenTelemetry tracing for both services: set-up from the standard OTEL_* variables, and the
W3C trace context carried in AMQP headers and in the outbox.

Off unless `OTEL_TRACES_EXPORTER` names an exporter (or an OTLP endpoint is set, which means
`otlp`; `shared.settings.TRACING_VARIABLES` are the variables that decide). Off, nothing is
configured and the SDK is not even imported: the API's tracer is the no-op one, and
`is_enabled()` lets a hot path skip per-event work altogether. On, the SDK loads the exporters
by their entry-point names and reads the other standard variables itself
(`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`).
Spans are exported in the background by a batch processor: an export that fails (no collector
at the endpoint) is logged by the SDK and dropped, never raised here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.errors import ConfigError
from shared.settings import TracingSettings

if TYPE_CHECKING:
    # The SDK is imported only when tracing is turned on: a process with tracing off loads
    # the API alone.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

# The header (AMQP) and outbox column that carry the W3C trace context (CONTRACT.md).
TRACEPARENT: Final = "traceparent"
MESSAGING_SYSTEM: Final = "rabbitmq"
# How long the exit of a command may wait for its last spans to go out: a collector that is
# down must not hold a stopping service for the exporter's whole retry budget.
SHUTDOWN_TIMEOUT_S: Final = 3.0

# The variables that turn tracing on; the SDK reads the rest.
_EXPORTER_VARIABLE: Final = "OTEL_TRACES_EXPORTER"
_ENDPOINT_VARIABLES: Final = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOL_VARIABLES: Final = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")

_propagator: Final = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None


def is_enabled() -> bool:
    """Whether spans are being recorded and exported (a cheap check for hot paths)."""
    return _provider is not None


def get_tracer(name: str) -> trace.Tracer:
    """A tracer that follows the provider set up later (the no-op one until then)."""
    return trace.get_tracer(name)


def traced(
    tracer: trace.Tracer,
    name: str,
    *,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Mapping[str, str | int] | None = None,
    parent: otel_context.Context | None = None,
) -> AbstractContextManager[trace.Span | None]:
    """A current span for the block (its exception recorded), or nothing at all when tracing is
    off: a hot path then pays one check, not a no-op span's context switch."""
    if _provider is None:
        return NO_SPAN
    return tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes)


# What `traced` gives with tracing off, for a caller that skips building a span's inputs too.
NO_SPAN: Final = nullcontext(None)


def within(traceparent: str | None) -> AbstractContextManager[object]:
    """The trace `traceparent` names as the current context for the block (tracing on only),
    so that the log lines written there name its trace, outside any span of this process."""
    if _provider is None or not traceparent:
        return NO_SPAN
    return _attached(context_of(traceparent))


def within_message(headers: Mapping[str, Any] | None) -> AbstractContextManager[object]:
    """`within` the trace an AMQP message's headers carry; with tracing off, not even read."""
    if _provider is None:
        return NO_SPAN
    return within(traceparent_in(headers))


@contextmanager
def _attached(parent: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


def configure_tracing(settings: TracingSettings, *, service: str) -> bool:
    """Set up the SDK when the OTEL_* variables ask for tracing; returns whether they did.

    `service` names the service when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES
    does. Called once per process, from a composition root; `ConfigError` for an exporter or
    protocol that is not installed.
    """
    global _provider
    if _provider is not None:
        return True
    names = requested_exporters(settings.variables)
    if not names:
        return False
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = [_exporter_class(name) for name in names]
    provider = TracerProvider(resource=_resource(settings.variables, service))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter()))
    use_provider(provider)
    return True


def use_provider(provider: TracerProvider) -> None:
    """Record spans through `provider` from now on (set-up, and tests' in-memory exporter).

    The API keeps the first global provider of a process; a later one (a test's) still serves
    this module's spans through `is_enabled` and `shutdown_tracing`.
    """
    global _provider
    _provider = provider
    if trace.get_tracer_provider() is not provider:
        trace.set_tracer_provider(provider)


def stop_recording() -> None:
    """Back to `is_enabled() == False` without shutting the provider down (tests)."""
    global _provider
    _provider = None


def shutdown_tracing() -> None:
    """Export the spans still buffered, within `SHUTDOWN_TIMEOUT_S`, and stop; idempotent."""
    global _provider
    provider, _provider = _provider, None
    if provider is None:
        return
    # On a thread of its own: the exporter's retries against a collector that is down would
    # hold the exit for their whole budget; the spans still buffered then are dropped.
    stopping = threading.Thread(target=provider.shutdown, name="tracing-shutdown", daemon=True)
    stopping.start()
    stopping.join(SHUTDOWN_TIMEOUT_S)


# ---- propagation -------------------------------------------------------------------------------


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads AMQP header tables, whose long strings pika may hand over as bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [str(key) for key in carrier]


_getter: Final = _HeaderGetter()


def inject(headers: MutableMapping[str, Any], context: otel_context.Context | None = None) -> None:
    """Write the trace context of `context` (else the current one) into `headers`."""
    _propagator.inject(headers, context=context)


def extract(headers: Mapping[str, Any] | None) -> otel_context.Context:
    """The trace context carried by `headers`; an empty context when there is none."""
    return _propagator.extract(headers or {}, getter=_getter)


def context_of(traceparent: str | None) -> otel_context.Context:
    """The context a stored `traceparent` names, as the parent of a span started later."""
    return extract({TRACEPARENT: traceparent} if traceparent else None)


def traceparent_in(headers: Mapping[str, Any] | None) -> str | None:
    """The `traceparent` header of an AMQP message, if it has one that reads as text."""
    found = _getter.get(headers or {}, TRACEPARENT)
    return found[0] if found else None


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to store with an event; None without one (and
    always with tracing off: no span of ours is current then)."""
    if _provider is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get(TRACEPARENT)


def messaging_attributes(
    *, destination: str, routing_key: str, message_id: str | None, operation: str
) -> dict[str, str]:
    """The messaging semantic conventions' attributes of a span about one message."""
    attributes = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": _OPERATION_TYPES.get(operation, operation),
        "messaging.destination.name": destination,
        "messaging.rabbitmq.destination.routing_key": routing_key,
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    return attributes


# `publish` is the operation's name in the span name; its type in the conventions is `send`.
_OPERATION_TYPES: Final = {"publish": "send"}


# ---- set-up ------------------------------------------------------------------------------------


def requested_exporters(env: Mapping[str, str]) -> list[str]:
    """The exporter entry points to load: OTEL_TRACES_EXPORTER's comma-separated names as the
    SDK reads them (`none` or unset: none), `otlp` resolved by the OTLP protocol asked for."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    requested = env.get(_EXPORTER_VARIABLE, "").strip()
    if requested.lower() == "none":
        return []
    if not requested:
        if not any(env.get(name, "").strip() for name in _ENDPOINT_VARIABLES):
            return []
        requested = "otlp"  # an endpoint alone asks for the OTLP exporter
    # `otlp` is the exporter of the protocol asked for; without one, the specification's
    # default, HTTP/protobuf, the one exporter installed (the SDK's own default is gRPC).
    protocols = [env.get(name, "").strip() for name in _PROTOCOL_VARIABLES]
    protocol = next((value for value in protocols if value), "http/protobuf")
    names = []
    for name in (part.strip() for part in requested.split(",")):
        if name == "otlp":
            name = _EXPORTER_BY_OTLP_PROTOCOL.get(protocol, "")
            if not name:
                raise ConfigError(f"unsupported OTLP protocol {protocol!r}")
        if name:
            names.append(name)
    return list(dict.fromkeys(names))


# The names under which the OTLP exporter packages register their span exporters
# (entry-point group `opentelemetry_traces_exporter`), by OTEL_EXPORTER_OTLP_PROTOCOL.
_EXPORTER_BY_OTLP_PROTOCOL: Final = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_EXPORTER_GROUP: Final = "opentelemetry_traces_exporter"


def _exporter_class(name: str) -> Callable[[], SpanExporter]:
    """The span exporter an installed package registers under `name`, as the SDK finds them."""
    found = entry_points(group=_EXPORTER_GROUP, name=name)
    if not found:
        raise ConfigError(f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed")
    exporter: Callable[[], SpanExporter] = next(iter(found)).load()
    return exporter


def _resource(variables: Mapping[str, str], service: str) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    # OTEL_SERVICE_NAME wins, then OTEL_RESOURCE_ATTRIBUTES (which the SDK reads); its fallback
    # is "unknown_service", replaced here by the service's own name.
    named = variables.get("OTEL_SERVICE_NAME")
    resource = Resource.create({SERVICE_NAME: named} if named else None)
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    return resource
