"""introspect against OpenStack Glance (image API v2).

    settings.py    INTROSPECT_GLANCE_* settings: endpoints, identity, cache, notifications
    refs.py        image references: a bare id or an href (`http://host:9292/v2/images/<id>`), as Nova
    cloud.py       the cloud's settings, read by openstacksdk's config loader (clouds.yaml,
                   secure.yaml, OS_*): the keystoneauth1 session that carries every call
    client.py      the calls, each through that session (or one with fixed identity headers);
                   round-robin over endpoints with failover and a cool-down for a failed one
    source.py      a ByteSource over `GET /v2/images/{id}/file` with single Range requests, and the
                   bounded on-disk cache of the ranges fetched
    ownership.py   the marker property and the rule that keeps someone else's values (pure code)
    writeback.py   one atomic JSON-patch per image, and Glance's refusals (403/409/413/404) as outcomes
    messaging.py   the notification transport as Glance's: oslo.messaging's options from our settings
                   and/or glance-api.conf, the transport URL parsed by oslo.messaging
    listener.py    Glance notifications (oslo.messaging's listener) -> one inspection per change of
                   the image's data
    sync.py        the poller (`introspect glance sync --since T`)
    plugin.py      the interoperable-import plugin (runs inside Glance, library only)
    catalog.py     the catalog contract over Glance (INTROSPECT_CATALOG=glance): every trigger
                   inspects through it, with workers/pipeline.py's `introspect_image`
    cli.py         `introspect glance inspect|show|listen|sync`

The import plugin runs inside Glance's own process and venv: it imports only `introspect` and
taskflow, oslo.config and ownership.py, never the rest of this package (no settings, no keystoneauth1).
"""
