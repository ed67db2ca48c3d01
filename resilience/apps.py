from django.apps import AppConfig


class ResilienceConfig(AppConfig):
    name = "resilience"
    verbose_name = "Resilience"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from resilience import checks, config, live, metrics

        # A bad RAGSITE_SETTINGS_SOURCE or seed variable stops the process now (manage.py prints
        # "Configuration error: ..."), not at the first request that reads the settings.
        config.settings_source()
        config.env_config()
        config.use_live_source(live.source)
        metrics.install()
        checks.register()
