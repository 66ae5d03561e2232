#!/usr/bin/env bash
# `make run`: the whole suite on this machine. Brings up FerretDB and RabbitMQ
# (or uses MONGO_URL/AMQP_URL), creates the indexes, starts every service's web
# process (gunicorn + uvicorn worker class, no preload) and worker process,
# seeds the province SEN_PROVINCE names (the demo province by default), prints the URLs, and stops everything
# on Ctrl-C.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
py=$root/.venv/bin/python
state=${SEN_STATE_DIR:-$root/.sen}
mkdir -p "$state/log" "$state/prometheus"

started_infra=0
if [ -z "${MONGO_URL:-}" ] || [ -z "${AMQP_URL:-}" ]; then started_infra=1; fi
bash deploy/local/infra.sh up
set -a; eval "$(bash deploy/local/infra.sh env)"; set +a
export SEN_ENV=${SEN_ENV:-development}
export SEN_DEV_JWT_KEY=${SEN_DEV_JWT_KEY:-$state/dev-jwt.pem}
export LOG_LEVEL=${LOG_LEVEL:-INFO}
# the demo sends no e-mail: the reminders and the on-duty lead's messages, one JSON line each, go to this file
export SEN_NOTIFY_FILE=${SEN_NOTIFY_FILE:-$state/mail.jsonl}
# each service's port (SEN_PORTAL_PORT… to move one); the URLs the services call each other by follow them
declare -A ports=([portal]=${SEN_PORTAL_PORT:-8080} [ehr]=${SEN_EHR_PORT:-8081}
                  [teleconsult]=${SEN_TELECONSULT_PORT:-8082} [billing]=${SEN_BILLING_PORT:-8083})
export SEN_EHR_URL=${SEN_EHR_URL:-http://127.0.0.1:${ports[ehr]}}
export SEN_TELECONSULT_URL=${SEN_TELECONSULT_URL:-http://127.0.0.1:${ports[teleconsult]}}
export SEN_BILLING_URL=${SEN_BILLING_URL:-http://127.0.0.1:${ports[billing]}}
# the portal, for people: an API service's / (a 404) points there
export SEN_PORTAL_URL=${SEN_PORTAL_URL:-http://127.0.0.1:${ports[portal]}/}
# the province Sen serves: SEN_PROVINCE names its file (default: the demo province). Every setting it decides (the
# hub and its on-duty lead, the bank account the VietQR codes pay into, the facilities' levels, names and districts,
# the dashboard's goal, baseline and residents, and the holidays, base salary and price list when the file gives
# them) is exported from it, unless already set: deploy/README.md, "The province file"; seed.py seeds the same file
export SEN_PROVINCE=${SEN_PROVINCE:-$PWD/deploy/local/demo-province.json}
province_env=$("$py" deploy/local/province.py env "$SEN_PROVINCE")
eval "$province_env"

pids=()
declare -A names=() logs=()
# started NAME LOG: the process just started in the background is Sen's NAME ("ehr web"), writing to LOG
started() { pids+=("$!"); names[$!]=$1; logs[$!]=$2; }
# stop [MESSAGE [STATUS]]: say why, stop every process started, then the infrastructure if this script started it
stop() {
  trap - INT TERM EXIT
  echo "${1:-stopping Sen…}" >&2
  # TERM even to those the group's signal reached already (Ctrl-C, kill -- -<pgid>): needed when only this
  # script was signalled, harmless otherwise (gunicorn and the workers take a second signal as the same stop)
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$started_infra" = 1 ] && [ "${SEN_KEEP_INFRA:-0}" != 1 ]; then bash deploy/local/infra.sh down; fi
  exit "${2:-0}"
}
trap 'stop "stopping Sen, as asked…"' INT TERM
trap 'stop "stopping Sen…" "$?"' EXIT
# supervise: wait until a process ends. One that ends by itself has died: name it and its log, stop the rest and
# fail. One that ends with status 0 or of SIGINT/SIGTERM was stopped (gunicorn and the workers exit 0 on either):
# Ctrl-C signals the whole process group, and reaches the processes alone when this script ignores SIGINT (as a
# script started in the background does); Sen is then stopping as asked, not crashing
supervise() {
  local ended='' status=0
  wait -n -p ended "${pids[@]}" || status=$?
  case $status in
    0 | 130 | 143) stop "${names[$ended]} stopped (Ctrl-C or a signal): stopping Sen, as asked…" ;;
    *) stop "${names[$ended]} exited with status $status: stopping the rest of Sen (see ${logs[$ended]})" 1 ;;
  esac
}

"$py" -m sen_shared.devtoken admin >/dev/null   # makes the development issuer's key once
# development payment-webhook secrets (billing), made once: python -m sen_billing.devwebhook signs with them
if [ ! -s "$state/webhook-secrets.env" ]; then
  (umask 077; "$py" -m sen_billing.devwebhook --make-secrets >"$state/webhook-secrets.env")
fi
set -a; . "$state/webhook-secrets.env"; set +a
# the receiving account, for devwebhook in another shell: its test transfers name it (the demo cashier's queue)
printf 'SEN_BANK_ACCOUNT=%s\n' "$SEN_BANK_ACCOUNT" >"$state/bank.env"
for svc in ehr teleconsult billing portal; do "$py" -m "sen_$svc.indexes" >&2; done
# the local PostgreSQL's tuning of these databases only (each service's SEN_DB, else sen_<service>)
bash deploy/local/infra.sh tune $(for svc in ehr teleconsult billing portal; do echo "${SEN_DB:-sen_$svc}"; done | sort -u)

for svc in ehr teleconsult billing portal; do
  HOST=${SEN_HOST:-127.0.0.1} PORT=${ports[$svc]} PROMETHEUS_MULTIPROC_DIR=$state/prometheus/$svc \
    "$root/.venv/bin/gunicorn" -c deploy/gunicorn.conf.py "sen_$svc.asgi:app" \
    >>"$state/log/$svc-web.log" 2>&1 &
  started "$svc web" "$state/log/$svc-web.log"
  "$py" -m "sen_$svc.worker" >>"$state/log/$svc-worker.log" 2>&1 &
  started "$svc worker" "$state/log/$svc-worker.log"
done

for svc in ehr teleconsult billing portal; do
  url="http://127.0.0.1:${ports[$svc]}/readyz"
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && break
    sleep 0.2
  done
  curl -fsS -o /dev/null "$url" || { echo "$svc did not become ready; see $state/log/$svc-web.log" >&2; exit 1; }
done

"$py" deploy/local/seed.py --ehr "$SEN_EHR_URL" --data "$SEN_PROVINCE"

cat <<TXT

Sen is running (logs in $state/log):
  portal       http://127.0.0.1:${ports[portal]}/          (Cổng thông tin / web pages)
  sign in      clinic / sen-clinic, doctor / sen-doctor, cashier / sen-cashier,
               health-dept / sen-health-dept, admin / sen-admin   (demo users; README)
  ehr          http://127.0.0.1:${ports[ehr]}/fhir/metadata   (FHIR R4: the record)
  teleconsult  http://127.0.0.1:${ports[teleconsult]}/fhir/metadata   (Hội chẩn từ xa: consults, slots, visits)
  billing      http://127.0.0.1:${ports[billing]}/fhir/metadata   (Thanh toán: invoices; /payments, /webhooks)
  health       /healthz /readyz /metrics on every port
  token        make token ROLE=admin            (development bearer token; README: what each role reads)
  mail         ${SEN_NOTIFY_FILE:-$state/mail.jsonl}   (reminders, the on-duty lead's late-consult messages)
  pay          .venv/bin/python -m sen_billing.devwebhook --url http://127.0.0.1:${ports[billing]} \\
                 --reference HD… --amount 100000 | sh
                                                (a signed test webhook: the reference and the amount due
                                                 the invoice's page shows; it turns paid. A reference
                                                 no invoice has, e.g. HDNOTEXIST1: the cashier's /unmatched)
Ctrl-C stops everything.
TXT
supervise
