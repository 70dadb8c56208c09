# Two commands for a newcomer: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.amlhp-installed

.PHONY: setup test test-long unit lint demo kafka-up kafka-down cluster-up cluster-down \
        prometheus-up prometheus-down clean lab-setup lab-data lab-slow lab-lan lab-twins \
        ipv6-quality lab-demo browser-setup siem-setup

setup: $(STAMP) lab-setup browser-setup siem-setup

$(STAMP): pyproject.toml infra/kafka/pom.xml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,train,lab]'
	$(BIN)/amlhp infra fetch
	$(BIN)/amlhp model info --serving | tail -1
	touch $(STAMP)

# mypy's cache lives outside the clone when a user cache exists (a fresh clone then checks
# in seconds instead of half a minute); it is only a speed-up: delete it and nothing changes
MYPY_CACHE := $(if $(wildcard $(HOME)/.cache),$(HOME)/.cache/amlhp-mypy,.mypy_cache)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --cache-dir $(MYPY_CACHE) amlhp tests

test: setup lint
	$(BIN)/python -m pytest -m "not long"

# The tests too long for `make test`: a short real run of the slow lab (~75 s) and the
# 3-broker cluster's leader kills (~60 s; the single broker's restart stays in make test).
test-long: setup
	$(BIN)/python -m pytest -m long

unit: setup
	$(BIN)/python -m pytest -m "not kafka and not cluster and not prometheus"

demo: setup
	$(BIN)/amlhp demo

kafka-up: setup
	$(BIN)/amlhp infra kafka up

kafka-down: setup
	$(BIN)/amlhp infra kafka down

cluster-up: setup
	$(BIN)/amlhp infra kafka up --cluster

cluster-down: setup
	$(BIN)/amlhp infra kafka down --cluster

prometheus-up: setup
	$(BIN)/amlhp infra prometheus up

prometheus-down: setup
	$(BIN)/amlhp infra prometheus down

clean:
	-$(BIN)/amlhp infra kafka down --cluster
	-$(BIN)/amlhp infra kafka down
	-$(BIN)/amlhp infra prometheus down
	rm -rf var out build *.egg-info

# The attack lab's servers and tools (Debian packages; needs root). A no-op when all are
# installed; the lab's tests skip with a message where they are missing.
LAB_PACKAGES := mosquitto mosquitto-clients libcoap3-bin nginx-light openssh-server \
        openssh-client dnsmasq-base tcpdump hping3 nmap hydra ncrack masscan iodine iproute2 \
        inetutils-telnetd inetutils-inetd lighttpd php-cgi php-sqlite3 sqlmap dirb \
        slowhttptest ncat socat vsftpd curl mbpoll openssl dsniff iputils-ping thc-ipv6
LAB_PROGRAMS := mosquitto mosquitto_pub coap-server-notls nginx sshd dnsmasq tcpdump \
        hping3 nmap hydra ncrack masscan iodine iodined ip telnetd inetutils-inetd lighttpd php-cgi \
        sqlmap dirb slowhttptest ncat socat vsftpd curl mbpoll openssl arpspoof ping \
        atk6-fake_advertise6 nping
# Servers the packages above may start system-wide on install; the lab runs its own
# instances (its own configs, lab addresses only), so these are stopped again.
LAB_SYSTEM_SERVICES := lighttpd vsftpd inetutils-inetd
lab-setup:
	@missing=0; for p in $(LAB_PROGRAMS); do \
	  command -v $$p >/dev/null || test -x /usr/sbin/$$p || missing=1; done; \
	if [ $$missing = 0 ]; then echo "lab programs: all installed"; \
	elif [ "$$(id -u)" != 0 ]; then echo "lab-setup: run as root to install: $(LAB_PACKAGES)"; \
	else DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(LAB_PACKAGES) && \
	  for s in $(LAB_SYSTEM_SERVICES); do service $$s stop >/dev/null 2>&1 || true; done; fi

# Headless Chromium (Debian's package) for the run report's rendering test; needs root.
# A no-op when installed; the test skips with a message where it is missing.
browser-setup:
	@if command -v chromium >/dev/null; then echo "chromium: installed"; \
	elif [ "$$(id -u)" != 0 ]; then echo "browser-setup: run as root to install chromium"; \
	else DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; fi

# The receivers the SIEM tests deliver to and check with (Debian's rsyslog; tshark reads the
# pcaps of `amlhp extract`); needs root. A no-op when installed; the tests skip with a
# message where they are missing. The system rsyslog the package may start is stopped: the
# tests run their own on local ports.
siem-setup:
	@if command -v rsyslogd >/dev/null && command -v tshark >/dev/null; then \
	  echo "rsyslogd, tshark: installed"; \
	elif [ "$$(id -u)" != 0 ]; then echo "siem-setup: run as root to install rsyslog tshark"; \
	else DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    rsyslog tshark && \
	  (service rsyslog stop >/dev/null 2>&1 || true); fi

# The lab's training data (git-ignored, ~640 MB, ~40 min) and the committed demo capture.
lab-data: setup
	$(BIN)/amlhp lab run --profile full --seed 1 -o var/lab/full --workdir var/lab/work-full
	$(BIN)/amlhp lab verify var/lab/full
	$(MAKE) lab-slow
	$(MAKE) lab-lan
	$(MAKE) lab-twins

# ARP cache poisoning, an ARP sweep and an IPv6 scan on an Ethernet LAN of network
# namespaces (about 30 s; part of lab-data). Their incidents: amlhp alerts var/lab/lan/arp.pcap
lab-lan: setup
	$(BIN)/amlhp lab arp -o var/lab/lan --seconds 60

# The same attacks over IPv4 and IPv6 on that LAN (nmap, hydra, nping; about a minute),
# and how the committed model judges each family (docs/results.md#ipv6-and-arp).
lab-twins: setup
	$(BIN)/amlhp lab twins -o var/lab/twins
ipv6-quality: setup
	$(BIN)/amlhp lab twins-quality var/lab/twins -o model/results/ipv6/committed

# The low-and-slow attacks at their real pace, side by side, and an hour of the benign
# devices (1 h 0 min 33 s here; part of lab-data). Their incidents: amlhp alerts-lab.
lab-slow: setup
	$(BIN)/amlhp lab slow --seed 1 -o var/lab/slow --workdir var/lab/work-slow
	$(BIN)/amlhp lab verify var/lab/slow

lab-demo: setup
	$(BIN)/amlhp lab run --profile demo --seed 2 -o var/lab/demo --workdir var/lab/work-demo
	$(BIN)/amlhp lab verify var/lab/demo
	$(BIN)/amlhp lab merge var/lab/demo --snaplen 256 -o data/demo/lab-demo.pcap

# Model results table (README): IoT-AMLHP, ablations and baselines on the public captures,
# random and by-flow splits, one process (one torch thread) per split; about an hour on
# two CPU cores. Then the masking study, the lab figures and the committed default model
# (needs the lab data: make lab-data), and the inference benchmark (Fig. 10).
.PHONY: results masking-study lab-results default-model bench-score cross-source \
        ipv6-twins-model ipv6-twins-cross-source
RESULTS_ARGS := --out-dir model/results --artifacts-dir out/models --max-per-class 5000 \
	--epochs 10 --threads 1
results: setup
	$(BIN)/amlhp model results --split random $(RESULTS_ARGS) & \
	$(BIN)/amlhp model results --split flow $(RESULTS_ARGS) & \
	wait

# Which header fields to mask: train on some capture files, test on unseen ones.
masking-study: setup
	$(BIN)/amlhp model masking-study --labels model/labels/public.yaml --threads 1 \
		--out-dir model/results/masking
	$(BIN)/amlhp model masking-study --labels model/labels/lab-public.yaml --threads 1 \
		--max-per-class 3000 --out-dir model/results/masking-lab-public \
		--variant addresses --variant addresses+ttl --variant addresses+path+checksums \
		--variant addresses+path+checksums+seq

# Leave one source out (docs/model.md): every source (the lab's full run and each public
# collection) held out in turn, the default model's recipe trained on the others; needs
# the lab data (make lab-data). 2,909 s measured on two cores shared with other jobs. Its folds/ calibrate the
# default model's malicious score and decision band.
CROSS_SOURCE_ARGS := --labels model/labels/all-sources.yaml --max-per-class 2000 \
	--max-benign 20000 --max-test-per-class 3000 --epochs 3 --threads 2
cross-source: setup
	$(BIN)/amlhp model cross-source $(CROSS_SOURCE_ARGS) --out-dir model/results/cross-source-default

# Learning a site (docs/model.md#learning-a-site). The known attacks every site profile is
# guarded with (committed as model/artifacts/attack-reference.*, 100 packets of each attack
# class; about 2 minutes), and the study behind the choice of method: the cross-source
# folds kept as models (about 21 minutes), each adapted on benign first halves and judged
# on the second halves and on the attacks it never saw (about 3 minutes), then each benign
# source learnt whole and the public attack captures' incidents compared (minutes).
.PHONY: attack-reference adapt-study
attack-reference: setup
	$(BIN)/amlhp model attack-reference --out model/artifacts/attack-reference
adapt-study: setup
	$(BIN)/amlhp model cross-source $(CROSS_SOURCE_ARGS) --no-random \
		--out-dir out/adapt/cross-source --models-dir out/adapt/models
	$(BIN)/amlhp model adapt-study --models-dir out/adapt/models --out-dir model/results/adapt
	$(BIN)/amlhp model adapt-incidents --models-dir out/adapt/models \
		--out model/results/adapt/incidents.json

LAB_TRAIN := --labels model/labels/lab.yaml --max-per-class 4000 --epochs 10 --threads 1
lab-results: setup
	$(BIN)/amlhp train $(LAB_TRAIN) --split random --out out/lab/amlhp-lab-random \
		--report-dir model/results/lab/random --json
	$(BIN)/amlhp train $(LAB_TRAIN) --split flow --out out/lab/amlhp-lab-flow \
		--report-dir model/results/lab/flow --json

# The default model: the lab's full run + every public source, the cross-source recipe
# (2,000 packets per attack class, 20,000 benign, 3 epochs; addresses, TTL, IP ID and
# checksums zeroed), calibrated on the folds of `make cross-source`.
DEFAULT_TRAIN := --labels model/labels/all-sources.yaml --arch amlhp --split random \
	--max-per-class 2000 --max-benign 20000 --epochs 3 --seed 0 --threads 2 \
	--mask ip.src --mask ip.dst --mask path --mask checksums \
	--calibrate-on model/results/cross-source-default/folds
default-model: setup
	$(BIN)/amlhp train $(DEFAULT_TRAIN) \
		--out model/artifacts/amlhp-default --report-dir model/results/default --json

# The default model's recipe with IPv6 twins (model/augment.py; not the committed model
# yet: docs/results.md#ipv6-and-arp), about 2.5 minutes, and how it judges the twin runs;
# its leave-one-source-out table: the cross-source recipe with --ipv6-twins 0.25.
ipv6-twins-model: setup
	$(BIN)/amlhp train $(DEFAULT_TRAIN) --ipv6-twins 0.25 \
		--out out/amlhp-ipv6-twins --report-dir out/amlhp-ipv6-twins-report --json
	$(BIN)/amlhp lab twins-quality var/lab/twins --model out/amlhp-ipv6-twins.json \
		-o model/results/ipv6/twins-trained
ipv6-twins-cross-source: setup
	$(BIN)/amlhp model cross-source $(CROSS_SOURCE_ARGS) --ipv6-twins 0.25 \
		--out-dir model/results/cross-source-ipv6-twins

# The committed flow model (docs/flows.md, README "Flow context"): device identity from
# IoT Sentinel (class = capture folder, each capture's own device) and the lab's benign
# devices (the hour of `make lab-slow`, labels model/labels/lab-devices.yaml), every local
# and loopback host a device; split by capture file, the lab's one recording by time.
# About 9 minutes on two cores (9 min 8 s measured on 2 vCPU Intel Xeon before the
# profile step, 8 of them training), with the test-split figures; the hidden-layer
# profiles (validation split) are fitted after training.
# Then the attack flow model (docs/flows.md "Attack flows"; model/labels/flow-attacks.yaml:
# the lab's slow hour and the public captures, classes = incident kinds): leave one source
# out (its figures, and each fold's model for figures that need one that never saw the
# source), then the committed model on every source, its alarm the folds' cross-source one.
# The attack model's part: 38 s to build, 25 min 40 s for the nine folds, 3 min to train
# (2 vCPU Intel Xeon); about 38 minutes for the whole recipe.
.PHONY: flow-models
SENTINEL := ../shared/data/public/iot_sentinel/captures_IoT_Sentinel/captures_IoT-Sentinel
FLOW_NETS := --local-net 10.0.0.0/8 --local-net 172.16.0.0/12 --local-net 192.168.0.0/16 \
	--local-net 127.0.0.0/8
FLOW_ATTACK_ARGS := --epochs 8 --max-per-class 2000 --seed 0 --threads 2
flow-models: setup
	$(BIN)/amlhp flows build $(SENTINEL) --by-folder --main-device-only $(FLOW_NETS) \
		-o out/flows/sentinel.npz
	$(BIN)/amlhp flows build var/lab/slow/benign.pcap --labels model/labels/lab-devices.yaml \
		$(FLOW_NETS) --device-net 127.10.0.0/16 -o out/flows/lab-devices.npz
	$(BIN)/amlhp flows merge out/flows/sentinel.npz out/flows/lab-devices.npz \
		-o out/flows/devices.npz
	$(BIN)/amlhp flows train --data out/flows/devices.npz -o flows/artifacts/devices \
		--split mixed --epochs 30 --max-per-class 600 --seed 0 --threads 2
	$(BIN)/amlhp flows fit-profiles --data out/flows/devices.npz --model flows/artifacts/devices
	$(BIN)/amlhp flows evaluate --data out/flows/devices.npz --model flows/artifacts/devices \
		--threads 2 -o out/flows/devices-eval
	cp out/flows/devices-eval/results.json docs/flows/devices-results.json
	$(BIN)/amlhp flows build var/lab/slow ../shared/data/public \
		--labels model/labels/flow-attacks.yaml $(FLOW_NETS) --max-flows-per-class 3000 \
		-o out/flows/attacks.npz
	$(BIN)/amlhp flows loso --data out/flows/attacks.npz $(FLOW_ATTACK_ARGS) \
		--save-models out/flows/loso -o docs/flows/attacks-loso.json
	$(BIN)/amlhp flows train --data out/flows/attacks.npz -o flows/artifacts/attacks \
		--split mixed $(FLOW_ATTACK_ARGS) --alarm-from docs/flows/attacks-loso.json

bench-score: setup
	$(BIN)/amlhp bench score --fig10 --threads 2 --out-dir benchmarks/results

# Throughput and lag benchmarks (docs/benchmarks.md): stage rates, Fig. 10, end to end at
# 25/50/100/150% of the measured capacity (a minute each) and 1 vs 2 workers, on the local
# broker, the alert engine on one core, the capacity under TLS + SASL beside plaintext
# (about 3 minutes more) and with the flow worker beside the packet worker (about 1
# minute), and learning a site (about 1 minute); about 18-20 minutes on two cores. JSON,
# PNG plots and results.md in benchmarks/results.
.PHONY: bench
bench: setup kafka-up
	$(BIN)/amlhp bench all --out-dir benchmarks/results
	$(BIN)/amlhp bench alerts --out benchmarks/results/alerts.json
	$(BIN)/amlhp infra kafka up --secure
	$(BIN)/amlhp bench secure --rounds 3 --out benchmarks/results/secure.json
	$(BIN)/amlhp bench flows-beside --rounds 2 --out benchmarks/results/flows-beside.json
	$(BIN)/amlhp bench adapt --out-dir benchmarks/results

# Incident figures with thresholds fitted leaving one source out (README, "Incidents");
# about 10 minutes on two cores; the scored captures are kept in out/alerts-corpus.
.PHONY: alerts-figures
alerts-figures: setup
	$(BIN)/amlhp alerts-evaluate --cache out/alerts-corpus --workers 2
