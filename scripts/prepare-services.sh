#!/usr/bin/env bash
# Make sure the databases the SQL integration tests use are running, with
# distributed transactions enabled. Idempotent: run it as often as you like.
#   PostgreSQL  127.0.0.1:5432, trust auth, database "test", max_prepared_transactions > 0
#   MariaDB     127.0.0.1:3306, root without password, database "test" (XA is always on)
# Missing servers are installed from Debian's packages. Needs root (or sudo).
set -euo pipefail

readyWaitS=${DTX_SERVICES_WAIT_S:-60}
pgPreparedMax=64

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}
say() { echo "prepare-services: $*"; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# wait_until DESCRIPTION COMMAND...: poll once a second, at most readyWaitS seconds.
wait_until() {
  local what=$1
  shift
  for _ in $(seq 1 "$readyWaitS"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  say "$what did not become ready within ${readyWaitS}s"
  return 1
}

# ---- PostgreSQL -------------------------------------------------------------
if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
  say "installing postgresql"
  apt_install postgresql
fi
pg_version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$pg_version main"; then
  say "creating cluster $pg_version/main"
  as_root pg_createcluster "$pg_version" main --port 5432
fi
pg_conf=/etc/postgresql/$pg_version/main
pg_ctl() { as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" main "$@"; }
if ! grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$pg_conf/pg_hba.conf"; then
  say "allowing trust auth from 127.0.0.1"
  as_root sed -i '1i host all all 127.0.0.1/32 trust' "$pg_conf/pg_hba.conf"
  as_root sed -i '1i local all all trust' "$pg_conf/pg_hba.conf"
  pg_lsclusters -h | grep -q "^$pg_version  *main .* online" && pg_ctl reload
fi
pg_lsclusters -h | grep -q "^$pg_version  *main .* online" || pg_ctl start
wait_until "PostgreSQL" pg_isready -q -h 127.0.0.1 -p 5432
pg() { psql -X -q -t -A -h 127.0.0.1 -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 -c "$1"; }
if [ "$(pg 'SHOW max_prepared_transactions')" = "0" ]; then
  say "enabling prepared transactions (max_prepared_transactions = $pgPreparedMax) and restarting PostgreSQL"
  pg "ALTER SYSTEM SET max_prepared_transactions = $pgPreparedMax"
  pg_ctl restart
  wait_until "PostgreSQL" pg_isready -q -h 127.0.0.1 -p 5432
fi
[ "$(pg "SELECT count(*) FROM pg_database WHERE datname = 'test'")" = "1" ] || pg "CREATE DATABASE test"
say "PostgreSQL $pg_version ready: max_prepared_transactions = $(pg 'SHOW max_prepared_transactions')"

# ---- MariaDB ----------------------------------------------------------------
if [ ! -x /usr/sbin/mariadbd ]; then
  say "installing mariadb-server"
  apt_install mariadb-server
fi
my() { mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -u root -N -B -e "$1"; }
if ! my "SELECT 1" >/dev/null 2>&1; then
  if ! mariadb-admin --protocol=socket -u root ping >/dev/null 2>&1; then
    say "starting MariaDB"
    as_root install -d -o mysql -g mysql /run/mysqld
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql --bind-address=127.0.0.1 --port=3306
  fi
  wait_until "MariaDB (socket)" as_root mariadb-admin --protocol=socket -u root ping
  # A fresh Debian install lets root in only over the Unix socket: allow TCP from 127.0.0.1 without a password.
  if ! my "SELECT 1" >/dev/null 2>&1; then
    say "allowing root without password from 127.0.0.1"
    as_root mariadb --protocol=socket -u root -e "
      ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
      CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
      GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
      FLUSH PRIVILEGES;"
  fi
  wait_until "MariaDB (127.0.0.1:3306)" my "SELECT 1"
fi
my "CREATE DATABASE IF NOT EXISTS test"
say "MariaDB ready: $(my 'SELECT VERSION()')"

# ---- Chromium (the dashboard test drives it headless with playwright-core) ----
if ! command -v chromium >/dev/null 2>&1; then
  say "installing chromium"
  apt_install chromium
fi
say "chromium: $(chromium --version 2>/dev/null || echo missing)"
