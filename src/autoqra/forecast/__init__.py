"""Know the cost before you submit: autoqra.forecast.core.forecast (device-hours, memory, disk, wall time)."""

from autoqra.forecast.core import forecast, format_table, load_forecast_config
from autoqra.forecast.devices import DEVICE_NAMES, get_device

__all__ = ["DEVICE_NAMES", "forecast", "format_table", "get_device", "load_forecast_config"]
