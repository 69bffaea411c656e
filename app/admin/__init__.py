"""The admin console: server-rendered pages under `/admin` for reviewing and merging profiles."""

from app.admin.routes import router

__all__ = ["router"]
