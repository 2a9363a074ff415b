"""Phone numbers: parse and normalize to E.164."""

import phonenumbers


def normalize(number: str) -> str:
    """Return the E.164 form of a valid international number, or raise ValueError."""
    text = number.strip().replace(" ", "")
    if not text.startswith("+") or len(text) > 20:
        raise ValueError("numbers must be in international form: +4915...")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
