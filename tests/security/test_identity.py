"""The node identity a client certificate backs: SPIFFE URIs and DNS names, and the one-line
reasons a claim is refused."""

from __future__ import annotations

import pytest

from heliostat.security.identity import Identity, identities, refusal

SPIFFE = "spiffe://mesh.example/ns/eu-west/sa/gw-eu"
DNS = "gw-eu.eu-west.gateways.example"


def test_both_forms_name_a_node_and_its_region() -> None:
    assert identities([SPIFFE, DNS]) == [
        Identity("gw-eu", "eu-west", SPIFFE),
        Identity("gw-eu", "eu-west", DNS),
    ]


@pytest.mark.parametrize("san", [SPIFFE, DNS])
def test_a_matching_san_backs_the_claim(san: str) -> None:
    assert refusal("gw-eu", "eu-west", ["unrelated.example", san]) is None


@pytest.mark.parametrize(
    "san",
    [
        "spiffe://mesh.example/ns/eu-west/sa/gw-eu/extra",
        "spiffe://mesh.example/ns//sa/gw-eu",
        "spiffe://mesh.example/sa/gw-eu/ns/eu-west",
        "spiffe://mesh.example/ns/eu-west/sa/gw-eu?x=1",
        "https://mesh.example/ns/eu-west/sa/gw-eu",
        "gw-eu.eu-west",  # a DNS name needs a suffix beyond node and region
        "*.eu-west.gateways.example",
        "gw-eu..example",
    ],
)
def test_malformed_names_name_no_node(san: str) -> None:
    assert identities([san]) == []
    reason = refusal("gw-eu", "eu-west", [san])
    assert reason is not None and reason.startswith(
        "node 'gw-eu': the client certificate names no node"
    )


def test_another_node_or_region_is_refused_with_what_the_certificate_says() -> None:
    assert refusal("gw-us", "eu-west", [SPIFFE]) == (
        "node 'gw-us' claims region 'eu-west' but its certificate is for gw-eu in eu-west"
    )
    assert refusal("gw-eu", "us-east", [DNS]) == (
        "node 'gw-eu' claims region 'us-east' but its certificate is for gw-eu in eu-west"
    )


def test_no_certificate_is_refused() -> None:
    assert refusal("gw-eu", "eu-west", []) == (
        "node 'gw-eu': no client certificate with a subject alternative name"
    )


def test_a_trust_domain_excludes_the_others() -> None:
    assert refusal("gw-eu", "eu-west", [SPIFFE], trust_domain="mesh.example") is None
    assert refusal("gw-eu", "eu-west", [SPIFFE], trust_domain="other.example") is not None
    # DNS names do not carry a trust domain: the CA is the trust.
    assert refusal("gw-eu", "eu-west", [DNS], trust_domain="other.example") is None
