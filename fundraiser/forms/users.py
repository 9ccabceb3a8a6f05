"""Inviting organizers and partners."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, SelectChoice, SelectField
from wtforms.validators import Email, InputRequired, Length, ValidationError

from ..models import Role


class InviteForm(FlaskForm):
    """Who to invite, as what, and for partners which group."""

    email = EmailField(
        _l("E-mail"),
        validators=[
            InputRequired(_l("Enter an e-mail address.")),
            Email(_l("Enter a valid e-mail address."), check_deliverability=False),
            Length(max=254),
        ],
    )
    role = SelectField(
        _l("Role"),
        choices=[
            SelectChoice(Role.PARTNER.value, _l("Partner of an aid group")),
            SelectChoice(Role.ORGANIZER.value, _l("Organizer")),
        ],
    )
    aid_group_id = SelectField(_l("Aid group (for partners)"), coerce=str, validate_choice=False)

    def __init__(self, groups, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._group_ids = {str(g.id) for g in groups}
        self.aid_group_id.choices = [SelectChoice("", _l("—"))] + [
            SelectChoice(str(g.id), g.name) for g in groups
        ]

    def validate_aid_group_id(self, field: SelectField) -> None:
        """Partners need an approved group; organizers have none."""
        if self.role.data == Role.PARTNER.value and field.data not in self._group_ids:
            raise ValidationError(_l("Choose the partner's aid group."))
