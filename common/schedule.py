"""When the daily run happens: after the NSE close (15:30 IST), with time for Yahoo to publish
the day's bars, on weekdays (a weekday holiday is a reported skip, not an error)."""
from __future__ import annotations

TIMEZONE = "Asia/Kolkata"
"""The exchange's time zone: the schedule's, and the one "today" is read in."""
CRON = "0 18 * * 1-5"
"""18:00 Monday to Friday, in TIMEZONE."""
