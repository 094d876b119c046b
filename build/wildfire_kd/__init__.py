"""wildfire-kd: distil a YOLOv8 smoke/fire teacher into a YOLOv8n student for field cameras."""

__version__ = "0.1.0"
