from django.apps import AppConfig


class RagConfig(AppConfig):
    name = "rag"
    verbose_name = "Documents and questions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from prometheus_client import REGISTRY

        from rag import checks, metrics, reembedding
        from resilience import admin as resilience_admin

        # The provider settings' admin asks the domain which chunks a model change would strand.
        resilience_admin.use_stale_chunk_finder(reembedding.stale_chunk_summary)
        # Served from the global registry outside gunicorn (ragsite.metrics composes it under it).
        for collector in (metrics.cache_collector, metrics.job_collector, metrics.eval_collector):
            if collector not in REGISTRY._collector_to_names:
                REGISTRY.register(collector)
        checks.register()

        from rag import model_warmup

        # gunicorn workers load the model before serving (ragsite/gunicorn_conf.py); the
        # development server loads it as it starts, so the first question does not wait for it.
        if model_warmup.serving_with_runserver():
            model_warmup.warm_up_in_background()
