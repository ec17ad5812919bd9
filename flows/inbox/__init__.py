"""The inbox of the retrain flow: new pairs checked (:mod:`~flows.inbox.validation`), kept
away from the test scenes (:mod:`~flows.inbox.guard`) and ingested into the catalogue
(:mod:`~flows.inbox.ingestion`)."""
