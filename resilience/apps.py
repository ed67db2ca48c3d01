from django.apps import AppConfig


class ResilienceConfig(AppConfig):
    name = "resilience"
    verbose_name = "Resilience"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from resilience import checks, config, live, metrics

        config.use_live_source(live.source)
        metrics.install()
        checks.register()
