"""Kindred's one settings class, read from `KINDRED_*` environment variables."""

from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from identity.events import IdentityRules
from identity.graph import Limits
from identity.matching import Thresholds
from identity.matching_service import MatchSettings
from identity.normalize import DEFAULT_BLOCKED, Blocklist
from profiles.webhooks.policy import RetryPolicy
from profiles.webhooks.service import WebhookConfig


class Environment(StrEnum):
    """Where Kindred runs; `prod` turns off the GraphQL IDE and introspection."""

    DEV = "dev"
    PROD = "prod"


class LogFormat(StrEnum):
    """How log lines are rendered."""

    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    """The standard library's level names."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class Settings(BaseSettings):
    """Every setting Kindred reads; tests build one and pass it in."""

    model_config = SettingsConfigDict(env_prefix="KINDRED_", extra="ignore")

    mongodb_uri: str | None = Field(
        default=None,
        description="MongoDB connection string. Absent: start the embedded SecantusDB server.",
    )
    database: str = Field(default="kindred", description="Database name.")
    data_dir: Path = Field(
        default=Path("./kindred-data"),
        description="Storage directory of the embedded server (only without MONGODB_URI).",
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port the HTTP server binds.")
    env: Environment = Field(
        default=Environment.DEV, description="`dev` or `prod` (no GraphQL IDE, no introspection)."
    )
    log_level: LogLevel = Field(default=LogLevel.INFO, description="Log level.")
    log_format: LogFormat = Field(default=LogFormat.TEXT, description="`text` or `json` logs.")
    source_precedence: list[str] = Field(
        default=["admin", "*", "enrichment:*"],
        description="Source patterns, highest precedence first (JSON list); the trait "
        "catalog can override it per trait.",
    )
    graphql_max_page: int = Field(default=500, ge=1, le=10_000, description="Largest `first:`.")
    graphql_max_depth: int = Field(default=12, ge=2, description="Deepest GraphQL query.")
    graphql_max_aliases: int = Field(default=100, ge=1, description="Most aliases per query.")
    graphql_max_tokens: int = Field(default=5_000, ge=100, description="Longest GraphQL query.")
    read_cache_seconds: int = Field(
        default=60, ge=0, description="Cache-Control max-age of the REST profile read."
    )
    phone_default_region: str = Field(
        default="US",
        pattern=r"^[A-Z]{2}$",
        description="Region (ISO 3166 alpha-2) for phone numbers given without a country code.",
    )
    # Profile builder (the worker); see docs/architecture.md.
    worker_in_process: bool = Field(
        default=True, description="Run the profile builder inside `kindred serve`."
    )
    worker_batch_size: int = Field(default=500, ge=1, le=10_000, description="Events per batch.")
    worker_lease_seconds: float = Field(
        default=60, gt=0, description="How long a batch stays leased to a worker that went quiet."
    )
    worker_poll_seconds: float = Field(
        default=0.2, gt=0, description="Pause between polls when no event is pending."
    )
    # Segments; see docs/segments.md.
    segments_realtime: bool = Field(
        default=True,
        description="Re-evaluate affected segments after each batch the builder applies.",
    )
    segments_scheduler_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often the scheduler wakes for profiles a time rule made due.",
    )
    # Webhooks on segment enter/exit; see docs/webhooks.md.
    webhooks_in_process: bool = Field(
        default=True, description="Run the webhook delivery loop inside `kindred serve`."
    )
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, description="Pause between delivery passes when little is due."
    )
    webhook_batch_size: int = Field(
        default=100, ge=1, le=1_000, description="Webhook deliveries leased per pass."
    )
    webhook_concurrency: int = Field(
        default=10, ge=1, le=100, description="Webhook requests in flight per process."
    )
    webhook_timeout_seconds: float = Field(
        default=10, gt=0, le=60, description="Limit on one webhook request and its answer."
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=50, description="Failed attempts before a delivery is dead."
    )
    webhook_cache_seconds: float = Field(
        default=5, ge=0, le=300, description="How long the subscription list is cached."
    )
    rfm_every_hours: float = Field(
        default=24, ge=0, description="Hours between RFM recomputes; 0 turns them off."
    )
    # Ingest (Segment-compatible tracking API); see docs/api.md.
    ingest_max_event_bytes: int = Field(
        default=32 * 1024, ge=1024, description="Largest event, in bytes of JSON (32 KB)."
    )
    ingest_max_batch_bytes: int = Field(
        default=500 * 1024,
        ge=1024,
        description="Largest request body, after gzip decompression, in bytes (500 KB).",
    )
    ingest_max_batch_events: int = Field(
        default=2_500, ge=1, description="Most events in one /v1/batch request."
    )
    events_write_concern: str = Field(
        default="1",
        pattern=r"^(majority|[1-9][0-9]?)$",
        description="Write concern `w` for the event log (`1` or `majority`); always journaled.",
    )
    embedded_cache_size: str = Field(
        default="256M",
        pattern=r"^[0-9]+[KMG]$",
        description="WiredTiger cache of the embedded server; bounds its memory.",
    )

    # Identity resolution; see docs/identity.md.
    identity_blocked_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED),
        description="Identifier values (or whole `kind:value` keys) never used to link profiles.",
    )
    identity_max_emails: int = Field(
        default=5, ge=1, le=100, description="Most emails one profile links by."
    )
    identity_max_phones: int = Field(
        default=5, ge=1, le=100, description="Most phone numbers one profile links by."
    )
    identity_shared_after: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="An identifier seen with more distinct user ids than this stops linking.",
    )

    identity_canonical_emails: bool = Field(
        default=False,
        description="Also link by provider-folded emails (Gmail dots, `+tags`).",
    )
    match_online: bool = Field(
        default=True,
        description="Match profiles whose identifying traits change, as the builder applies them.",
    )
    match_suggest: float = Field(
        default=0.9, ge=0, le=1, description="Match probability at which a pair is suggested."
    )
    match_auto_merge: float = Field(
        default=0.99,
        ge=0,
        le=1,
        description="Match probability at which a pair is merged, if an email or phone agrees.",
    )
    match_max_block: int = Field(
        default=100, ge=2, le=10_000, description="Largest block of look-alikes paired out."
    )

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> "Settings":
        if self.match_suggest > self.match_auto_merge:
            raise ValueError("match_suggest must not exceed match_auto_merge")
        return self

    def webhook_config(self) -> WebhookConfig:
        """Returns how webhooks are sent."""
        return WebhookConfig(
            timeout=timedelta(seconds=self.webhook_timeout_seconds),
            concurrency=self.webhook_concurrency,
            cache_seconds=self.webhook_cache_seconds,
            retry=RetryPolicy(max_attempts=self.webhook_max_attempts),
        )

    def identity_rules(self) -> IdentityRules:
        """Returns the identity resolution rules these settings configure."""
        return IdentityRules(
            blocklist=Blocklist(self.identity_blocked_values),
            limits=Limits(
                per_kind={
                    "user_id": 1,
                    "email": self.identity_max_emails,
                    "phone": self.identity_max_phones,
                },
                shared_after=self.identity_shared_after,
            ),
            phone_region=self.phone_default_region,
            canonical_emails=self.identity_canonical_emails,
        )

    def match_settings(self) -> MatchSettings:
        """Returns the fuzzy matcher's settings."""
        rules = self.identity_rules()
        return MatchSettings(
            thresholds=Thresholds(auto_merge=self.match_auto_merge, suggest=self.match_suggest),
            limits=rules.limits,
            max_block=self.match_max_block,
            phone_region=self.phone_default_region,
        )

    @property
    def embedded(self) -> bool:
        """Tells whether Kindred owns an embedded database server."""
        return self.mongodb_uri is None
