"""The site's one way of writing dates and times (ISO 8601 order, 24-hour clock, UTC as TIME_ZONE says): every
template writes ``|date`` (a day) or ``|date:"DATETIME_FORMAT"`` (a moment), and a datetime printed as it is
comes out the same way."""

DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i"
DATE_INPUT_FORMATS = ["%Y-%m-%d"]
DATETIME_INPUT_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]
