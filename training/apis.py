"""The training loop's API: scoring text with the promoted reward model."""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.roles import IsResearcher
from training.scoring import NoPromotedModel, reward_scores

MAX_COMPLETIONS = 32
MAX_TEXT = 50_000


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = serializers.CharField(max_length=MAX_TEXT, trim_whitespace=False)


class ScoreInputSerializer(serializers.Serializer):
    prompt = serializers.CharField(required=False, max_length=MAX_TEXT, trim_whitespace=False)
    messages = MessageSerializer(many=True, required=False)
    completions = serializers.ListField(
        child=serializers.CharField(max_length=MAX_TEXT, trim_whitespace=False, allow_blank=True),
        min_length=1,
        max_length=MAX_COMPLETIONS,
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if ("prompt" in data) == ("messages" in data):
            raise serializers.ValidationError('Give exactly one of "prompt" and "messages".')
        if "prompt" in data:
            data["messages"] = [{"role": "user", "content": data.pop("prompt")}]
        elif not data["messages"]:
            raise serializers.ValidationError({"messages": "At least one message is needed."})
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(f"Unknown fields: {', '.join(sorted(unknown))}.")
        return data


class RewardScoreApi(APIView):
    """POST {prompt or messages, completions} -> the promoted reward model's scores."""

    permission_classes = [IsResearcher]

    @extend_schema(request=ScoreInputSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            return Response(
                {"detail": "Expected a JSON object."}, status=status.HTTP_400_BAD_REQUEST
            )
        serializer = ScoreInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            version, scores = reward_scores(**serializer.validated_data)
        except NoPromotedModel as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(
            {"model_version": {"id": version.pk, "version": version.version}, "scores": scores}
        )
