"""Message variables filled per endpoint, as Pinpoint fills them."""

from __future__ import annotations

from typing import Any

import pytest

from homing_collector.campaigns.templates import fill, fill_message

ENDPOINT: dict[str, Any] = {
    "Id": "e-1",
    "ChannelType": "GCM",
    "Address": "token",
    "Demographic": {"Platform": "android", "AppVersion": "1.4", "Timezone": "Europe/Paris"},
    "Location": {"City": "Lyon", "Latitude": 45.76},
    "Attributes": {"interests": ["cycling", "jazz"], "plan": ["pro"]},
    "User": {"UserId": "u-9", "UserAttributes": {"FirstName": ["Ada"]}},
    "Metrics": {"visits": 3.0, "score": 2.5},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi {{User.UserAttributes.FirstName}}", "Hi Ada"),
        ("{{Demographic.Platform}} {{Demographic.AppVersion}}", "android 1.4"),
        ("likes {{Attributes.interests}}", "likes cycling,jazz"),
        (
            "first {{Attributes.interests.[0]}}, second {{Attributes.interests.[1]}}",
            "first cycling, second jazz",
        ),
        ("{{Attributes.interests.[5]}}!", "!"),
        ("{{Metrics.visits}} visits, score {{Metrics.score}}", "3 visits, score 2.5"),
        ("{{{User.UserId}}} in {{ Location.City }}", "u-9 in Lyon"),
        ("{{Id}} {{ChannelType}} {{Location.Latitude}}", "e-1 GCM 45.76"),
        ("Hi {{User.UserAttributes.LastName}}.", "Hi ."),
        ("{{Demographic}}", ""),  # an object has no text
        ("no variables", "no variables"),
        (
            "{{#if Attributes.plan}}pro{{else}}free{{/if}}",
            "{{#if Attributes.plan}}pro{{else}}free{{/if}}",
        ),
        ("{{ not a variable }}", "{{ not a variable }}"),
        ("", ""),
    ],
)
def test_fill(text: str, expected: str) -> None:
    assert fill(text, ENDPOINT) == expected


def test_default_substitutions_fill_missing_values_only() -> None:
    defaults = {"User.UserAttributes.LastName": "friend", "User.UserAttributes.FirstName": "you"}
    assert fill(
        "Hi {{User.UserAttributes.FirstName}} {{User.UserAttributes.LastName}}", ENDPOINT, defaults
    ) == ("Hi Ada friend")


def test_fill_message_fills_title_body_and_data_only() -> None:
    message = {
        "Title": "{{User.UserAttributes.FirstName}}, new ride",
        "Body": "Near {{Location.City}}",
        "Url": "https://example.com/{{User.UserId}}",
        "Data": {"who": "{{User.UserId}}", "n": 1},
        "SilentPush": False,
    }
    filled = fill_message(message, ENDPOINT)
    assert filled == {
        "Title": "Ada, new ride",
        "Body": "Near Lyon",
        "Url": "https://example.com/{{User.UserId}}",
        "Data": {"who": "u-9", "n": 1},
        "SilentPush": False,
    }
    assert message["Title"] == "{{User.UserAttributes.FirstName}}, new ride"  # not changed in place
