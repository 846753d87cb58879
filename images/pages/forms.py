"""Gallery forms: the query strings of the gallery's pages, validated."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms

from formats.rfc3339 import parse_timestamp


class DateInput(forms.DateInput):
    input_type = "date"


class DeviceListForm(forms.Form):
    """``?after=<deviceId>``: the last device of the previous page of ``/``."""

    after = forms.CharField(max_length=100, required=False, strip=False)


class DeviceImagesForm(forms.Form):
    """A device page's date filter (UTC days, both inclusive) and position.

    ``before`` is the timestamp of the last (oldest) image of the previous
    page: the grid runs newest first.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Added here because ``from`` is a Python keyword.
        self.fields["from"] = forms.DateField(
            required=False, label="From (UTC)", widget=DateInput()
        )
        self.fields["to"] = forms.DateField(required=False, label="To (UTC)", widget=DateInput())
        self.fields["before"] = forms.CharField(
            required=False, strip=False, widget=forms.HiddenInput()
        )

    def clean_before(self) -> datetime | None:
        text = self.cleaned_data["before"]
        if not text:
            return None
        try:
            return parse_timestamp(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        first, last = cleaned.get("from"), cleaned.get("to")
        if first is not None and last is not None and last < first:
            self.add_error("to", "must not be before From")
        return cleaned

    def start(self) -> datetime | None:
        """The first instant shown: midnight UTC of From."""
        first: date | None = self.cleaned_data.get("from")
        return None if first is None else datetime.combine(first, time.min, UTC)

    def end(self) -> datetime | None:
        """The first instant not shown: midnight UTC after To."""
        last: date | None = self.cleaned_data.get("to")
        if last is None or last == date.max:
            return None
        return datetime.combine(last + timedelta(days=1), time.min, UTC)

    def before(self) -> datetime | None:
        return self.cleaned_data.get("before")
