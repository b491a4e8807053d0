//! Helpers for caiclust's integration tests: locating the fixture
//! environments that `scripts/setup-test-envs.sh` builds.
