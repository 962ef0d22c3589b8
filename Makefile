# ryu_overlay: `make install`, `make test`, `make lint`, `make demo`. Run as root on Debian/Ubuntu.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
APT_PACKAGES := python3 python3-venv python3-dev gcc openvswitch-switch mininet iperf3 \
                iputils-ping ethtool tcpdump arping ndisc6 iproute2 procps isc-dhcp-client \
                chromium chromium-driver \
                etcd-server etcd-client \
                openvswitch-common openssl
PYTEST_ARGS ?=

.PHONY: install apt venv lint test unit demo bench clean

install: apt venv

# Installs only what is missing, so a second run does not touch apt at all. The Debian
# service scripts are not used: tests start their own ovsdb-server/ovs-vswitchd per hypervisor.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The venv sees the system site-packages so that Debian's mininet module is importable.
# Ryu 4.34 builds only with setuptools<68 and without build isolation; our setup.py installs
# ryu_overlay_shim.pth, which lets plain ryu-manager import on this Python (see README).
venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.cfg setup.py pyproject.toml constraints-build.txt
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	PIP_CONSTRAINT=constraints-build.txt $(PIP) install -q 'setuptools<68' wheel pbr
	PIP_CONSTRAINT=constraints-build.txt $(PIP) install -q --no-build-isolation -r requirements.txt
	PIP_CONSTRAINT=constraints-build.txt $(PIP) install -q --no-build-isolation --no-deps -e .
	$(VENV)/bin/ryu-overlay --help >/dev/null
	$(VENV)/bin/ryu-manager --version >/dev/null
	touch $@

# The gates: ruff and mypy (configured in pyproject.toml).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# CI runs this: the lint gate, then every test with the coverage of ryu_overlay/ (controller
# subprocesses included), failing under the floor in pyproject.toml ([tool.coverage.report]).
test: install lint
	rm -f .coverage .coverage.*
	$(PY) -m pytest -q --cov --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -q tests/unit

# The tour (mininet/demo.py), then the default Mininet experiment set, which writes its plots to results/.
demo: install
	$(PY) mininet/demo.py
	$(PY) mininet/experiments.py all --out results/
	@echo "plots and CSVs: $(CURDIR)/results/ (explained in docs/experiments.md)"

# Benchmarks; each rewrites its block of docs/performance.md (the soak: docs/reliability.md).
# migration, placement and datapath need root (real OVS). About 25 minutes in all.
bench: install
	$(PIP) install -q py-spy
	$(PY) bench/cold_start.py --hypervisors 100 --ports-per-hv 10 --ports-per-network 10 --seed 1 --doc
	$(PY) bench/cold_start.py --hypervisors 1000 --ports-per-hv 10 --ports-per-network 10 --seed 1 --profile --doc
	$(PY) bench/cold_start.py --hypervisors 1000 --ports-per-hv 10 --ports-per-network 10 --seed 1 --create rest --doc
	$(PY) bench/cold_start.py --hypervisors 3000 --ports-per-hv 10 --ports-per-network 10 --seed 1 --profile --doc
	$(PY) bench/churn.py --hypervisors 100 --ops 300 --window 1 --seed 1 --doc
	$(PY) bench/churn.py --hypervisors 1000 --ops 300 --window 1 --seed 1 --doc
	$(PY) bench/churn.py --hypervisors 1000 --ops 300 --window 8 --seed 1 --doc
	$(PY) bench/arp_proxy.py --hypervisors 100 --requests 20000 --window 16 --seed 1 --doc
	$(PY) bench/arp_proxy.py --hypervisors 1000 --requests 20000 --window 16 --seed 1 --profile --doc
	$(PY) bench/arp_proxy.py --hypervisors 1000 --requests 20000 --window 64 --seed 1 --doc
	$(PY) bench/migration.py --moves 20 --doc
	$(PY) bench/placement.py --ports 30 --doc
	$(PY) bench/datapath.py --rounds 7 --seconds 5 --doc
	$(PY) bench/routed.py --rounds 7 --seconds 5 --pings 1000 --doc
	$(PY) bench/router_flows.py --hypervisors 100
	$(PY) bench/packet_in_latency.py --hypervisors 100 --writes 5000 --clients 4 --label after --doc
	$(PY) bench/bfd_failover.py --rounds 10 --doc
	$(PY) bench/soak.py --hypervisors 100 --seconds 300 --doc

clean:
	rm -rf $(VENV) *.egg-info results .coverage .coverage.* .mypy_cache .ruff_cache
