"""Organizer forms for campaign messages: the editor, the test send and the status buttons.

The editor has a subject and a body per language of the app, so its class is built once per
list of languages. The form checks what each input must look like; what depends on other
inputs (a time for the chosen kind, the default language's text) is the domain's to refuse,
and the view puts that refusal beside the field it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, time
from functools import lru_cache

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    DateTimeLocalField,
    IntegerField,
    RadioField,
    SelectField,
    StringField,
    TextAreaField,
    TimeField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    AnyOf,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    ValidationError,
)

from ..campaigns import (
    AUDIENCE_LABELS,
    BODY_MAX,
    NAME_MAX,
    OFFSET_MAX_MINUTES,
    SUBJECT_MAX,
    MessageFields,
)
from ..i18n import language_name
from ..models import Audience, CampaignMessage, SendKind, SunEvent

SEND_KIND_LABELS = {
    SendKind.LOCAL_TIME: _l("A time of day, wherever each subscriber is"),
    SendKind.SUN: _l("Sunrise or sunset where each subscriber is"),
    SendKind.UTC_INSTANT: _l("One moment for everyone (UTC)"),
}
SUN_EVENT_LABELS = {SunEvent.SUNRISE: _l("Sunrise"), SunEvent.SUNSET: _l("Sunset")}


class MessageForm(FlaskForm):
    """A message's name, audience, send time, and texts (fields added per language)."""

    languages: tuple[str, ...] = ()

    name = StringField(
        _l("Name"),
        # Required, but checked by the domain with the other texts, so all show at once.
        validators=[Length(max=NAME_MAX, message=_l("At most %(n)s characters.", n=NAME_MAX))],
        description=_l("For organizers only; subscribers see the subject."),
    )
    audience = RadioField(
        _l("Who receives it"),
        choices=[SelectChoice(a.value, label) for a, label in AUDIENCE_LABELS.items()],
        default=Audience.ALL.value,
        validate_choice=False,
        validators=[
            InputRequired(_l("Choose who receives it.")),
            AnyOf([a.value for a in Audience], message=_l("Choose who receives it.")),
        ],
    )
    send_kind = RadioField(
        _l("When it is sent"),
        choices=[SelectChoice(k.value, label) for k, label in SEND_KIND_LABELS.items()],
        default=SendKind.LOCAL_TIME.value,
        validate_choice=False,
        validators=[
            InputRequired(_l("Choose when it is sent.")),
            AnyOf([k.value for k in SendKind], message=_l("Choose when it is sent.")),
        ],
    )
    local_time = TimeField(
        _l("Local time"),
        default=time(7, 0),
        validators=[Optional()],
        invalid_value_message=_l("Enter a time like 07:00."),
    )
    sun_event = SelectField(
        _l("Sun event"),
        choices=[
            SelectChoice("", "—"),
            *(SelectChoice(e.value, label) for e, label in SUN_EVENT_LABELS.items()),
        ],
        validate_choice=False,
        validators=[
            AnyOf(["", *(e.value for e in SunEvent)], message=_l("Choose sunrise or sunset."))
        ],
    )
    offset_minutes = IntegerField(
        _l("Minutes after (or before, with a minus sign)"),
        default=0,
        validators=[
            Optional(),
            NumberRange(
                min=-OFFSET_MAX_MINUTES,
                max=OFFSET_MAX_MINUTES,
                message=_l("Keep the shift within %(n)s minutes.", n=OFFSET_MAX_MINUTES),
            ),
        ],
    )
    send_at = DateTimeLocalField(
        _l("Date and time in UTC"),
        format=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"],
        validators=[Optional()],
        invalid_value_message=_l("Enter a date and time like 2027-01-09 05:00."),
    )
    default_locale = SelectField(
        _l("Default language"),
        validate_choice=False,
        description=_l("Subscribers whose language the message lacks get this one."),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.default_locale.choices = [
            SelectChoice(code, language_name(code)) for code in self.languages
        ]
        if not self.default_locale.data:
            self.default_locale.data = self.languages[0] if self.languages else "en"
        for code in self.languages:
            # Labels name the language, so an error summary says which subject is missing.
            name = language_name(code)
            self.subject_field(code).label.text = str(_l("Subject in %(language)s", language=name))
            self.body_field(code).label.text = str(
                _l("Message in %(language)s (Markdown)", language=name)
            )

    def validate_default_locale(self, field: SelectField) -> None:
        """Only the app's languages."""
        if field.data not in self.languages:
            raise ValidationError(_l("Choose one of the app's languages."))

    def subject_field(self, code: str) -> StringField:
        """The subject input for one language."""
        return self[f"subject_{code}"]

    def body_field(self, code: str) -> TextAreaField:
        """The Markdown body input for one language."""
        return self[f"body_{code}"]

    def fields(self) -> MessageFields:
        """The domain's view of what was typed."""
        send_at = self.send_at.data.replace(tzinfo=UTC) if self.send_at.data else None
        return MessageFields(
            name=self.name.data or "",
            audience=Audience(self.audience.data),
            send_kind=SendKind(self.send_kind.data),
            default_locale=self.default_locale.data,
            texts={
                code: (self.subject_field(code).data or "", self.body_field(code).data or "")
                for code in self.languages
            },
            send_at=send_at,
            local_time=self.local_time.data,
            sun_event=SunEvent(self.sun_event.data) if self.sun_event.data else None,
            offset_minutes=self.offset_minutes.data or 0,
        )

    @classmethod
    def for_message(cls, message: CampaignMessage) -> MessageForm:
        """The editor filled in with a message's current values."""
        texts = {t.locale: t for t in message.texts}
        data = {
            "name": message.name,
            "audience": message.audience,
            "send_kind": message.send_kind,
            "local_time": message.local_time,
            "sun_event": message.sun_event or "",
            "offset_minutes": message.offset_minutes,
            "send_at": message.send_at.replace(tzinfo=None) if message.send_at else None,
            "default_locale": message.default_locale,
        }
        for code in cls.languages:
            text = texts.get(code)
            data[f"subject_{code}"] = text.subject if text else ""
            data[f"body_{code}"] = text.body_markdown if text else ""
        return cls(data=data)


@lru_cache(maxsize=8)
def message_form_class(languages: Sequence[str]) -> type[MessageForm]:
    """The editor's class for these languages: a subject and a body field for each."""
    attrs: dict = {"languages": tuple(languages)}
    for code in languages:
        attrs[f"subject_{code}"] = StringField(
            _l("Subject"),
            validators=[
                Optional(),
                Length(max=SUBJECT_MAX, message=_l("At most %(n)s characters.", n=SUBJECT_MAX)),
            ],
        )
        attrs[f"body_{code}"] = TextAreaField(
            _l("Message (Markdown)"),
            validators=[
                Optional(),
                Length(max=BODY_MAX, message=_l("At most %(n)s characters.", n=BODY_MAX)),
            ],
        )
    return type("LanguageMessageForm", (MessageForm,), attrs)


class TestSendForm(FlaskForm):
    """Send one copy, in one language, to the signed-in organizer."""

    locale = SelectField(_l("Language"), validate_choice=False)

    def __init__(self, languages: Sequence[str], *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.locale.choices = [SelectChoice(code, language_name(code)) for code in languages]
        self._languages = list(languages)

    def validate_locale(self, field: SelectField) -> None:
        """Only a language the message is written in (else its default is used anyway)."""
        if field.data not in self._languages:
            raise ValidationError(_l("Choose one of the message's languages."))


class ActionForm(FlaskForm):
    """Schedule, back to draft, cancel: a button with a CSRF token."""
