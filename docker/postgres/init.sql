-- Run once by the postgres image when its data volume is first created (docker-compose.yml).
-- Each service gets its own role and database, so neither can read or change the other's
-- tables. The passwords are demo defaults: change them here and in the environment
-- (PRODUCER_DB_PASSWORD, CONSUMER_DB_PASSWORD) together, then `docker compose down -v`.
-- They differ from every role and database name: the services' logs mask each password
-- wherever it appears, which would otherwise mask the names too.

CREATE ROLE producer LOGIN PASSWORD 'outbox-demo-pw';
CREATE DATABASE producer OWNER producer;
REVOKE CONNECT ON DATABASE producer FROM PUBLIC;

CREATE ROLE email_consumer LOGIN PASSWORD 'ledger-demo-pw';
CREATE DATABASE email_consumer OWNER email_consumer;
REVOKE CONNECT ON DATABASE email_consumer FROM PUBLIC;
