"""Settings from the environment: FRAGMENTS_* plus the providers' usual variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fragments.hostport import parse_registry_hosts
from fragments.mail_url import parse_smtp_url

DEFAULT_SECRET_KEY = "dev-insecure-secret-key-change-me-in-production"


def _env(name: str) -> AliasChoices:
    # Provider variables keep their usual names (no FRAGMENTS_ prefix), as their SDKs document.
    return AliasChoices(name)


def _parse_team_domains(value: str) -> dict[str, str]:
    """`{"example.com": "<team id>"}` or `example.com=<team id>,other.org=<team id>`."""
    text = value.strip()
    if text.startswith("{"):
        parsed = json.loads(text)
        if not isinstance(parsed, dict):
            raise ValueError("FRAGMENTS_OIDC_TEAM_DOMAINS must be a JSON object")
        pairs = [(str(k), str(v)) for k, v in parsed.items()]
    else:
        pairs = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            domain, sep, team = item.partition("=")
            if not sep or not domain.strip() or not team.strip():
                raise ValueError(f"expected domain=team_id, got {item!r}")
            pairs.append((domain, team))
    # Domains compare case-insensitively, as e-mail domains do.
    return {domain.strip().lower().lstrip("@"): team.strip() for domain, team in pairs}


class Settings(BaseSettings):
    """Everything the app can be configured with; see the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="FRAGMENTS_", extra="ignore", populate_by_name=True
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path(".data")
    database_url: str | None = None
    # PostgreSQL with RLS: migrations run as the role owning the tables (this URL), the app as a
    # role without BYPASSRLS (database_url) that migrations grant row access to (app role).
    database_migration_url: str | None = None
    database_app_role: str | None = None
    # Migrate at start-up (the default for `make run`); off when deploys migrate on their own.
    auto_migrate: bool = True
    redis_url: str | None = None
    preview_domain: str | None = None
    # The scheme of preview URLs (https when a TLS proxy serves the preview domain).
    preview_scheme: Literal["http", "https"] = "http"
    port: int = 8000

    # Accounts. The secret signs tokens; the default is refused in production.
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    # Fernet key for provider keys at rest; derived from the secret key when unset.
    encryption_key: SecretStr | None = None
    allow_guests: bool | None = None
    access_token_minutes: int = 15
    refresh_token_days: int = 30
    supabase_jwt_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SUPABASE_JWT_SECRET", "FRAGMENTS_SUPABASE_JWT_SECRET")
    )
    # Mail (password reset, address confirmation). SMTP URL schemes: smtp:// (plain, for a
    # local relay), smtp+starttls:// (STARTTLS required; port 587 by default), smtps://
    # (implicit TLS; port 465 by default); user and password in the URL, percent-encoded.
    # Without it, password reset is off.
    smtp_url: SecretStr | None = None
    mail_from: str = "Fragments <no-reply@localhost>"
    # The app's external base URL (scheme, host, port): mailed links and SSO redirect URIs are
    # built on it; default http://127.0.0.1:<port>.
    public_url: str | None = None
    password_reset_minutes: int = Field(30, ge=1)
    # New accounts must follow a mailed link before they can sign in (needs smtp_url).
    require_email_confirmation: bool = False
    email_confirmation_hours: int = Field(48, ge=1)
    # Single sign-on with an OpenID Connect provider (off without an issuer): discovery at
    # `<issuer>/.well-known/openid-configuration`, the code flow with PKCE, users mapped by `sub`.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_name: str = "SSO"
    oidc_scopes: str = "openid email profile"
    # E-mail domain -> team id: a user whose *verified* address is at the domain joins the team
    # as a member on sign-in. JSON, or `domain=team_id` pairs separated by commas.
    oidc_team_domains: Annotated[dict[str, str], NoDecode] = {}
    retention_days: int = 90
    conversations_page_size: int = 50

    # Request limits (1 MB of JSON not counting images, 5 MB an image, 20 MB a body).
    max_body_bytes: int = 20 * 1024 * 1024
    # Requests to a preview (an app's own uploads, forms) have their own, larger cap.
    preview_max_body_bytes: int = 50 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    max_image_bytes: int = 5 * 1024 * 1024
    # Data files uploaded into a conversation: the largest one, and how many a conversation keeps.
    upload_max_bytes: int = 10 * 1024 * 1024
    upload_max_files: int = 10
    # A version the user edited by hand in the code view: its code and files together (UTF-8),
    # kept well under `max_json_bytes` so the next chat request that carries it still fits.
    edit_max_bytes: int = 512 * 1024
    max_messages: int = 500
    max_message_parts: int = 100

    # Streaming: partials are validated and emitted on this timer, never per provider chunk.
    partial_interval_seconds: float = 0.05
    first_event_timeout_seconds: float = 30.0
    stream_idle_timeout_seconds: float = 60.0
    # Retries of a failed provider call (5xx, connection refused) before its first token only.
    provider_retries: int = 1
    # The platform's failover chain, `provider:model` steps tried after the requested model
    # when a provider fails (5xx, 429, overloaded, connection, timeouts); a step is used only
    # when the platform has that provider's key. Empty: no failover.
    failover_chain: str = "anthropic:claude-sonnet-5-5,openai:gpt-4.1,google:gemini-2.5-pro"

    # Circuit breakers (providers, sandbox backends): `breaker_failures` failures within a
    # sliding `breaker_window_seconds` open a breaker; it fails fast for `breaker_open_seconds`,
    # then lets one probe through (one across all instances when Redis is configured).
    breaker_failures: int = Field(5, ge=1)
    breaker_window_seconds: float = Field(60.0, gt=0)
    breaker_open_seconds: float = Field(30.0, gt=0)
    # Providers with a platform key are health-checked this often (their model list; one
    # instance per interval when Redis is configured); 0 turns the checks off.
    health_interval_seconds: float = Field(60.0, ge=0)

    # History windowing: the last `history_turns` exchanges verbatim, older ones condensed into a
    # running summary; the window moves `history_step` exchanges at a time (so the summary and
    # the cached prompt prefix change only every `history_step` turns). Off: the whole history.
    history_window: bool = True
    history_turns: int = Field(5, ge=1)
    history_step: int = Field(2, ge=1)
    history_summary_chars: int = Field(500, ge=200)
    # Response cache: the same request (model, prompt version, windowed prompt, template) is
    # answered from the cache, still streamed; Redis (FRAGMENTS_REDIS_URL) with this TTL, else
    # memory (bounded, per process).
    response_cache: bool = True
    response_cache_ttl_seconds: float = Field(3600.0, gt=0)
    response_cache_max_entries: int = Field(1000, ge=1)
    # Model routing (off unless enabled): an edit of an existing fragment goes to the cheaper
    # model of the same provider given by this map (JSON object in the environment); a new app
    # stays on the chosen model; a request pins its model with config.routing "off".
    routing: bool = False
    routing_map: dict[str, str] = {
        "claude-sonnet-5-5": "claude-haiku-4-5",
        "claude-opus-5-5": "claude-haiku-4-5",
        "gpt-4.1": "gpt-4.1-mini",
        "gpt-4o": "gpt-4.1-mini",
        "gemini-2.5-pro": "gemini-2.5-flash",
        "mistral-large-latest": "codestral-latest",
    }
    # Edits of an existing fragment: "patch" asks the model for search/replace blocks (applied by
    # Morph when MORPH_API_KEY is set, else locally), "rewrite" for the whole program every time,
    # "auto" patches code long enough for a patch to be cheaper (see docs/edits.md).
    edit_mode: Literal["auto", "patch", "rewrite"] = "auto"
    # Morph's fast apply (OpenAI-compatible), used for platform-paid edits only.
    morph_api_key: SecretStr | None = Field(None, validation_alias=_env("MORPH_API_KEY"))
    morph_base_url: str = "https://api.morphllm.com/v1"
    morph_model: str = "morph-v3-large"
    morph_timeout_seconds: float = Field(20.0, gt=0)
    # Chat requests a rolling 24 hours (limits library; Redis when configured, else memory):
    # guests by IP, signed-in users by their team's tier (enterprise: the team's
    # limits.chat_per_day, else this default), and requests with the caller's own key or server.
    rate_limits: bool = True
    rate_limit_guest_per_day: int = Field(10, ge=1)
    rate_limit_free_per_day: int = Field(50, ge=1)
    rate_limit_pro_per_day: int = Field(200, ge=1)
    rate_limit_enterprise_per_day: int = Field(1000, ge=1)
    rate_limit_own_key_per_day: int = Field(500, ge=1)
    # Chat requests a rolling 24 hours of a whole team (all its members together), checked
    # beside each member's own limit; an enterprise team's limits.team_chat_per_day overrides.
    rate_limit_team_free_per_day: int = Field(150, ge=1)
    rate_limit_team_pro_per_day: int = Field(2000, ge=1)
    rate_limit_team_enterprise_per_day: int = Field(20000, ge=1)
    # Guest tokens (POST /api/auth/guest) one client IP may mint a rolling 24 hours: a new
    # token must not be a new quota (guests are limited by IP whatever token they hold).
    guest_tokens_per_day: int = Field(5, ge=1)
    # Peers whose X-Forwarded-For is believed (comma-separated IPs or CIDRs); empty: none, the
    # TCP peer is the client.
    trusted_proxies: str = ""
    # Sandbox runs (POST /api/sandbox) a rolling 24 hours, apart from chat and looser (a run
    # costs CPU, not model tokens): guests by IP, users by their team's tier (an enterprise
    # team's limits.sandbox_per_day overrides). Same switch, Redis and fallback as chat.
    sandbox_limit_guest_per_day: int = Field(50, ge=1)
    sandbox_limit_free_per_day: int = Field(200, ge=1)
    sandbox_limit_pro_per_day: int = Field(1000, ge=1)
    sandbox_limit_enterprise_per_day: int = Field(5000, ge=1)
    # Monthly token budgets (input + output) of a team by tier; an enterprise team's
    # limits.monthly_tokens overrides (set by a team admin).
    token_budget_free: int = Field(2_000_000, ge=0)
    token_budget_pro: int = Field(20_000_000, ge=0)
    token_budget_enterprise: int = Field(200_000_000, ge=0)
    # Tokens all guests behind one client IP may use a calendar month (UTC), whatever tokens
    # they hold; counted in the limiter's storage (Redis, else memory).
    token_budget_guest: int = Field(200_000, ge=0)
    # Seconds an instance keeps a team's monthly token sum (its own usage is added at once).
    token_budget_cache_seconds: float = Field(10.0, ge=0)

    # Which backend runs sandboxes: local processes (the default) or E2B's cloud (E2B_API_KEY).
    sandbox_backend: Literal["local", "e2b"] = "local"
    # E2B: the key, and the domain its API and previews live under (`<port>-<id>.<domain>`);
    # both keep the SDK's own variable names.
    e2b_api_key: SecretStr | None = Field(None, validation_alias=_env("E2B_API_KEY"))
    e2b_domain: str = Field("e2b.app", validation_alias=_env("E2B_DOMAIN"))

    # Local sandbox.
    sandbox_root: Path = Path("/var/tmp/fragments")
    sandbox_python: Path = Path("/usr/bin/python3")
    sandbox_run_timeout_seconds: float = 60.0
    sandbox_output_cap_bytes: int = 2 * 1024 * 1024
    sandbox_memory_bytes: int = 1024 * 1024 * 1024
    sandbox_max_processes: int = 128
    # A sandbox idle this long is killed; `extend` raises one sandbox's up to the maximum.
    sandbox_lifetime_seconds: float = 10 * 60
    sandbox_max_lifetime_seconds: float = 24 * 3600
    # A sandbox that fails to start is retried this many times, waiting 1x, 2x, 4x the backoff.
    sandbox_start_retries: int = 3
    # Warm sandboxes kept ready per template (JSON object in the environment); refill is CPU-bound.
    sandbox_pool_sizes: dict[str, int] = {
        "code-interpreter-v1": 1,
        "streamlit-developer": 1,
        "gradio-developer": 0,
    }
    # A taken pool slot is refilled once its request's result is served, web apps this long
    # after their URL (the browser loads the page meanwhile): a refill is CPU-bound.
    sandbox_pool_refill_delay_seconds: float = 2.0
    sandbox_retry_backoff_seconds: float = 1.0
    sandbox_cpus: float = 1.0
    # Sandbox n runs as uid sandbox_uid_base + n (n < sandbox_max_count): a uid per sandbox.
    sandbox_uid_base: int = 100_000
    sandbox_max_count: int = 32
    sandbox_start_timeout_seconds: float = 30.0
    # Sandboxes starting at once in this process (0: one per CPU). Starts are CPU-bound: a
    # burst started all together only slows every start past its timeout.
    sandbox_concurrent_starts: int = Field(0, ge=0)
    sandbox_interrupt_grace_seconds: float = 3.0
    sandbox_seccomp: bool = True
    # Installing a fragment's additional_dependencies (confined, wheels only) may take this long.
    sandbox_install_timeout_seconds: float = 180.0
    # Where installs get Python packages: an index URL, or a folder of wheels (offline; tests).
    sandbox_pip_index: str | None = None
    # Sandbox network: installs reach only the registries (PyPI, npm, the configured indexes'
    # hosts and these extra `host` / `host:port` entries, comma-separated; port 443 by default)
    # through the app's egress proxy. Running code has no network unless `internet`: then
    # HTTP(S) through the proxy to public addresses only (never loopback or private ranges).
    sandbox_registry_hosts: str = ""
    sandbox_egress: Literal["none", "internet"] = "none"
    # How caps are enforced: cgroups (v1 or v2) when writable, else rlimits; or force one.
    sandbox_limits: Literal["auto", "cgroup-v1", "cgroup-v2", "rlimit"] = "auto"

    # Observability. Off: no per-request log lines and no metrics (the bench measures their cost).
    observability: bool = True
    # /metrics: a bearer token, or a port of its own (see observability/exposition).
    metrics_token: SecretStr | None = None
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    # The month's model spending budget in US dollars, exported for alerts (0 = none).
    monthly_llm_budget_usd: float = Field(0.0, ge=0)
    # Fleet (see the README's "Running a fleet"): false = this API process runs no sandboxes
    # and sends them as jobs over Redis Streams to `fragments node` processes.
    embedded_node: bool = True
    # Every fleet key in Redis starts with this (streams, heartbeats, placements, job events).
    fleet_prefix: str = "fragments:"
    # Jobs waiting or running per stream before a new one is refused (503 with Retry-After).
    job_queue_max: int = 100
    # A job delivered to a node that stopped heart-beating it is taken over after this long.
    job_reclaim_idle_seconds: float = 15.0
    # Deliveries of one job before it goes to the dead-letter stream (and its caller gets an error).
    job_max_attempts: int = 3
    # How long a job's event stream (phases, result) is kept for replay.
    job_events_ttl_seconds: float = 3600.0
    # The longest an API process waits for a job's result.
    job_wait_seconds: float = 600.0
    # A node heart-beats this often; it counts as gone after three missed beats.
    node_heartbeat_seconds: float = 2.0
    # The URL the API tier reaches a node on (its previews); default http://<host>:<port>.
    node_url: str | None = None

    # Providers: keys and platform base URLs, under their usual names (`<env>_API_KEY`,
    # `<env>_BASE_URL`, as each ProviderSpec in llm/providers.py names them; a test holds the two
    # in step). The specs read them; nothing else does.
    anthropic_api_key: SecretStr | None = Field(None, validation_alias=_env("ANTHROPIC_API_KEY"))
    anthropic_base_url: str | None = Field(None, validation_alias=_env("ANTHROPIC_BASE_URL"))
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(None, validation_alias=_env("OPENAI_BASE_URL"))
    google_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GOOGLE_API_KEY", "GOOGLE_GENERATIVE_AI_API_KEY")
    )
    google_base_url: str | None = Field(None, validation_alias=_env("GOOGLE_BASE_URL"))
    mistral_api_key: SecretStr | None = Field(None, validation_alias=_env("MISTRAL_API_KEY"))
    mistral_base_url: str | None = Field(None, validation_alias=_env("MISTRAL_BASE_URL"))
    groq_api_key: SecretStr | None = Field(None, validation_alias=_env("GROQ_API_KEY"))
    groq_base_url: str | None = Field(None, validation_alias=_env("GROQ_BASE_URL"))
    fireworks_api_key: SecretStr | None = Field(None, validation_alias=_env("FIREWORKS_API_KEY"))
    fireworks_base_url: str | None = Field(None, validation_alias=_env("FIREWORKS_BASE_URL"))
    together_api_key: SecretStr | None = Field(None, validation_alias=_env("TOGETHER_API_KEY"))
    together_base_url: str | None = Field(None, validation_alias=_env("TOGETHER_BASE_URL"))
    xai_api_key: SecretStr | None = Field(None, validation_alias=_env("XAI_API_KEY"))
    xai_base_url: str | None = Field(None, validation_alias=_env("XAI_BASE_URL"))
    deepseek_api_key: SecretStr | None = Field(None, validation_alias=_env("DEEPSEEK_API_KEY"))
    deepseek_base_url: str | None = Field(None, validation_alias=_env("DEEPSEEK_BASE_URL"))
    ollama_base_url: str = Field(
        "http://127.0.0.1:11434/v1", validation_alias=_env("OLLAMA_BASE_URL")
    )

    # Traces (OpenTelemetry): on when an OTLP endpoint is set (the standard variables; the SDK
    # reads the other OTEL_* ones itself), or forced on/off by FRAGMENTS_TRACING.
    tracing: bool | None = None
    otel_exporter_otlp_endpoint: str | None = Field(
        None, validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None, validation_alias=_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    # Errors (Sentry): on when SENTRY_DSN is set; the SDK's own variable names.
    sentry_dsn: SecretStr | None = Field(None, validation_alias=_env("SENTRY_DSN"))
    sentry_environment: str | None = Field(None, validation_alias=_env("SENTRY_ENVIRONMENT"))
    sentry_release: str | None = Field(None, validation_alias=_env("SENTRY_RELEASE"))
    sentry_traces_sample_rate: float = Field(
        0.0, ge=0, le=1, validation_alias=_env("SENTRY_TRACES_SAMPLE_RATE")
    )
    # Product analytics (PostHog): on when POSTHOG_API_KEY is set.
    posthog_api_key: SecretStr | None = Field(None, validation_alias=_env("POSTHOG_API_KEY"))
    posthog_host: str = Field("https://us.i.posthog.com", validation_alias=_env("POSTHOG_HOST"))

    @field_validator("sandbox_registry_hosts")
    @classmethod
    def _registry_hosts(cls, value: str) -> str:
        return ",".join(parse_registry_hosts(value))

    @field_validator("oidc_team_domains", mode="before")
    @classmethod
    def _team_domains(cls, value: object) -> object:
        return _parse_team_domains(value) if isinstance(value, str) else value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None  # an empty variable means "no mail", as when it is unset
        if value is not None:
            parse_smtp_url(value.get_secret_value())  # a clear error at start-up, not at send
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("FRAGMENTS_PUBLIC_URL must start with http:// or https://.")
        return value or None

    @model_validator(mode="after")
    def _confirmation_needs_mail(self) -> Settings:
        # Refuse to start rather than create accounts that can never be confirmed.
        if self.require_email_confirmation and self.smtp_url is None:
            raise ValueError(
                "FRAGMENTS_REQUIRE_EMAIL_CONFIRMATION needs FRAGMENTS_SMTP_URL to send the links."
            )
        return self

    @property
    def resolved_public_url(self) -> str:
        """The app's external base URL (mailed links, SSO redirects), no trailing slash."""
        return (self.public_url or f"http://127.0.0.1:{self.port}").rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        from fragments.http_client_ip import parse_trusted

        # A typo must stop the start, not silently trust nobody (or everybody).
        return ",".join(str(network) for network in parse_trusted(value))

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'fragments.db'}"

    @property
    def resolved_migration_url(self) -> str:
        """Where migrations run: the table owner's URL when given, else the app's."""
        return self.database_migration_url or self.resolved_database_url

    @property
    def guests_allowed(self) -> bool:
        """Guests are welcome in development and refused in production unless enabled."""
        if self.allow_guests is not None:
            return self.allow_guests
        return self.env != "production"

    def check_production(self) -> None:
        """Refuse to run in production with the well-known default secret."""
        if self.env == "production" and self.secret_key.get_secret_value() == DEFAULT_SECRET_KEY:
            raise RuntimeError(
                "FRAGMENTS_SECRET_KEY must be set to a private random value in production."
            )

    @property
    def resolved_preview_domain(self) -> str:
        """Where preview origins live: `<port>-<sandbox_id>.<this>`."""
        return self.preview_domain or f"localhost:{self.port}"
