"""The one loopback check shared by the bridge, the dashboard guard, notifications and the openai backend."""

import pytest

from session.loopback import is_loopback, is_loopback_url


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("app.localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - a value under test, nothing binds here
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_hosts(host, expected):
    assert is_loopback(host) is expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080/v1", True),
        ("http://[::1]:9/x", True),
        ("https://localhost/bot", True),
        ("https://api.openai.com/v1", False),
        ("http://127.0.0.1.evil.example/v1", False),
        ("not a url", False),
    ],
)
def test_urls(url, expected):
    assert is_loopback_url(url) is expected
