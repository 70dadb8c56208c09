# Two commands for a newcomer: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.amlhp-installed

.PHONY: setup test unit lint demo kafka-up kafka-down cluster-up cluster-down \
        prometheus-up prometheus-down clean lab-setup

setup: $(STAMP)

$(STAMP): pyproject.toml infra/kafka/pom.xml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/amlhp infra fetch
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy amlhp tests

test: setup lint
	$(BIN)/python -m pytest

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
        openssh-client dnsmasq-base tcpdump hping3 nmap hydra ncrack
LAB_PROGRAMS := mosquitto mosquitto_pub coap-server-notls nginx sshd dnsmasq tcpdump \
        hping3 nmap hydra ncrack
lab-setup:
	@missing=0; for p in $(LAB_PROGRAMS); do \
	  command -v $$p >/dev/null || test -x /usr/sbin/$$p || missing=1; done; \
	if [ $$missing = 0 ]; then echo "lab programs: all installed"; \
	elif [ "$$(id -u)" != 0 ]; then echo "lab-setup: run as root to install: $(LAB_PACKAGES)"; \
	else DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(LAB_PACKAGES); fi
