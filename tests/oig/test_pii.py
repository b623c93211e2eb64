from oig.pii import PiiScrubber, luhn_valid, scrub

from .helpers import batch, conversation


def test_each_kind_is_replaced_and_counted():
    text = (
        "Mail jo.baker@example.co.uk or call +1 555-201-4477 / (020) 7946 0958. "
        "Server 192.168.10.254 and 2001:0db8:85a3:0000:0000:8a2e:0370:7334. Card 4111 1111 1111 1111."
    )
    scrubbed, counts = scrub(text)
    assert scrubbed == (
        "Mail [EMAIL] or call [PHONE] / [PHONE]. Server [IP_ADDRESS] and [IP_ADDRESS]. Card [CREDIT_CARD]."
    )
    assert counts == {"email": 1, "phone": 2, "ip_address": 2, "credit_card": 1}


def test_non_pii_numbers_survive():
    text = "Order 48213 shipped in 1822; 4 x 8 = 32; version 1.2.3; card-like 4111 1111 1111 1112 fails Luhn."
    assert scrub(text) == (text, {})
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_stage_scrubs_messages_and_text_and_records_counts():
    rows = batch([conversation("My email is a@b.io, ok?", "Thanks, I will write to a@b.io."), conversation("Hello there", "Hi")])
    out = PiiScrubber()(rows).to_pylist()
    assert out[0]["messages"][1]["content"] == "Thanks, I will write to [EMAIL]."
    assert out[0]["text"] == "<human>: My email is [EMAIL], ok?\n<bot>: Thanks, I will write to [EMAIL]."
    assert out[0]["pii_replaced"] == 2 and out[0]["flags"] == ["pii:email"]
    assert out[1]["pii_replaced"] == 0 and out[1]["flags"] == []
