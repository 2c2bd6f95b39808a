"""HTTP reads of the central event log: the whole log by position, and one stream."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from eventlog.errors import NotFound
from eventlog.http import error_responses, int_query, parse_int, parse_uuid, uuid_path
from eventlog.selectors import log_head, log_read, log_stream

MAX_LIMIT = 1000
MAX_AFTER = 2**62


class EventSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    event_id = serializers.UUIDField()
    stream_id = serializers.UUIDField()
    stream_type = serializers.CharField()
    version = serializers.IntegerField()
    type = serializers.CharField()
    data = serializers.JSONField()  # type: ignore[assignment]  # DRF's metaclass moves declared fields out of the class: .data stays the property
    occurred_at = serializers.DateTimeField()
    correlation_id = serializers.UUIDField()
    causation_id = serializers.UUIDField(allow_null=True)
    saga_id = serializers.UUIDField(allow_null=True)


class EventListApi(APIView):
    @extend_schema_serializer(component_name="EventPage")
    class OutputSerializer(serializers.Serializer):
        results = EventSerializer(many=True)
        next = serializers.CharField(allow_null=True, help_text="URL of the next page, or null at the head.")
        head = serializers.IntegerField(help_text="Highest position in the log when this page was read.")

    @extend_schema(
        operation_id="events_list",
        parameters=[
            int_query("after", minimum=0, maximum=MAX_AFTER, default=0, description="Return events with a position above this."),
            int_query("limit", minimum=1, maximum=MAX_LIMIT, default=100, description="At most this many events."),
        ],
        responses={200: OutputSerializer, **error_responses(e400="after or limit is not an integer within its bounds.")},
        tags=["events"],
    )
    def get(self, request: Request) -> Response:
        after = parse_int(request.query_params.get("after"), name="after", default=0, minimum=0, maximum=MAX_AFTER)
        limit = parse_int(request.query_params.get("limit"), name="limit", default=100, minimum=1, maximum=MAX_LIMIT)
        head = log_head()
        events = log_read(after=after, limit=limit)
        last = events[-1].position if events else after
        next_url = request.build_absolute_uri(f"{request.path}?after={last}&limit={limit}") if events and last is not None and last < head else None
        return Response({"results": EventSerializer(events, many=True).data, "next": next_url, "head": head})


class StreamDetailApi(APIView):
    @extend_schema_serializer(component_name="Stream")
    class OutputSerializer(serializers.Serializer):
        stream_id = serializers.UUIDField()
        stream_type = serializers.CharField()
        version = serializers.IntegerField()
        events = EventSerializer(many=True)

    @extend_schema(
        operation_id="streams_retrieve",
        parameters=[uuid_path("stream_id", "stream")],
        responses={200: OutputSerializer, **error_responses(e400="stream_id is not a UUID.", e404="No event of this stream in the log (yet).")},
        tags=["events"],
    )
    def get(self, request: Request, stream_id: str) -> Response:
        stream_uuid = parse_uuid(stream_id, name="stream_id")
        events = log_stream(stream_uuid)
        if not events:
            raise NotFound("No such stream in the event log.", {"stream_id": str(stream_uuid)})
        body = {"stream_id": stream_uuid, "stream_type": events[0].stream_type, "version": events[-1].version, "events": events}
        return Response(StreamDetailApi.OutputSerializer(body).data)
