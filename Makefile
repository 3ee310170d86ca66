# provisioner: two commands matter. `make demo` and `make test` set up what they need.
# Debian's python3 (python3-venv and python3-dev are in .ci/debian-packages.txt), whatever
# else the caller's PATH offers: the venv must not depend on a pyenv or a personal Python.
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
LAB_INVENTORY := /var/lib/provisioner-lab/inventory.yaml

.PHONY: setup demo test test-unit test-functional test-lab test-lab-slow maintenance-image host-image guest-image wheelhouse bench lab-down clean

setup: $(VENV)/.installed
	@.ci/install-debian-packages

$(VENV)/.installed: pyproject.toml provisioner/web/package-lock.json
	@.ci/install-debian-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	# The dashboard's browser libraries, as published on the npm registry (no build step).
	cd provisioner/web && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

maintenance-image: setup
	$(SUDO) $(PY) images/maintenance/build.py --out build/boot/maintenance

host-image: setup
	$(SUDO) $(PY) images/host/build.py --out build/images/host

guest-image: setup
	$(SUDO) $(PY) images/guest/build.py --out build/images/guest

# The provisioner and its Python dependencies as wheels, for playbooks/install.yml: the
# management host then installs from them with no package index.
wheelhouse: setup
	$(BIN)/pip wheel -q -w build/wheelhouse .

# The main job in the virtual lab: lab up, enroll every node to ready, import the host
# image, reimage every node to it (both racks at once: each is its own fault domain),
# then roll one host back to its pristine base; register this machine as a host and place
# one small role's guest (on it: a guest on a node runs under emulation inside emulation,
# minutes to boot here); say how much of its deadline each step took.
demo: maintenance-image host-image guest-image
	$(SUDO) $(BIN)/provisioner lab down
	$(SUDO) $(BIN)/provisioner lab up --nodes 2 --racks 2 --firmware mixed --bmc mixed --secure-boot on
	$(SUDO) $(BIN)/provisioner enroll --from $(LAB_INVENTORY)
	$(SUDO) $(BIN)/provisioner image import build/images/host/host.qcow2 --name host
	$(SUDO) $(BIN)/provisioner reimage all --image host --max-unavailable 100%
	$(SUDO) $(BIN)/provisioner rollback lab-r1-n1
	$(SUDO) $(BIN)/provisioner image import build/images/guest/guest.qcow2 --name guest
	$(SUDO) $(BIN)/provisioner lab host
	$(SUDO) $(BIN)/provisioner deploy docs/examples/hello-roles.yaml
	$(SUDO) $(BIN)/provisioner nodes
	$(SUDO) $(BIN)/provisioner guests
	$(SUDO) $(BIN)/provisioner lab margins
	@echo
	@echo "The lab stays up. The dashboard: http://127.0.0.1:8180/ui (sign in with the token in"
	@echo "/var/lib/provisioner-lab/data/operator.token). Try 'sudo $(BIN)/provisioner show lab-r1-n1',"
	@echo "'provisioner job', 'provisioner power off rack-1'; 'sudo $(BIN)/provisioner lab down' removes it."

test: setup
	$(MAKE) test-unit test-functional test-lab

test-unit: setup
	$(PY) -m mypy
	$(PY) -m pytest -q tests/unit

test-functional: setup
	$(SUDO) $(PY) -m pytest -q tests/functional

# The lab tier's groups side by side, each with a lab of its own (tests/lab/conftest.py), one
# per pytest-xdist worker; vmstat says how busy the machine was.
LAB_WORKERS ?= 1
test-lab: maintenance-image host-image guest-image wheelhouse
	$(SUDO) $(PY) -m tests.lab.sampled $(PY) -m pytest -q --durations=0 -n $(LAB_WORKERS) --dist loadscope \
		--no-loadscope-reorder tests/lab

# A slower machine: the multicast and guests modules, each alone, with one core taken by a
# CPU hog for their whole run (every lab deadline keeps a 3x margin: docs/design.md).
test-lab-slow: maintenance-image host-image guest-image
	$(SUDO) sh -c 'stress-ng --cpu 1 --quiet & hog=$$!; \
		$(PY) -m pytest -q tests/lab/test_multicast.py && $(PY) -m pytest -q tests/lab/test_guests_deploy.py; \
		code=$$?; kill $$hog; exit $$code'

bench: maintenance-image host-image
	$(SUDO) $(PY) bench/run.py

lab-down: setup
	$(SUDO) $(BIN)/provisioner lab down

clean:
	rm -rf build $(VENV) *.egg-info
