-- Run once by the postgres image when its data directory is new (docker-entrypoint-initdb.d), as the superuser.
-- Two roles (README: "Tamper-evident audit"):
--   portal_owner  owns the database and every table; only `manage.py migrate` and `grant_app_role` use it.
--   portal_app    what web, worker and scheduler connect as: owns nothing, so it cannot disable the audit
--                 triggers; `grant_app_role portal_app` gives it DML, and only SELECT+INSERT on audit rows.
-- The passwords are the local stack's; a real deployment keeps them in its secret store.
CREATE ROLE portal_owner LOGIN PASSWORD 'portal-owner';
CREATE ROLE portal_app LOGIN PASSWORD 'portal-app';
ALTER DATABASE portal OWNER TO portal_owner;
-- PostgreSQL 15: the public schema belongs to the database's owner and PUBLIC may not create in it.
