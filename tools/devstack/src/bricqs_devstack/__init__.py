"""Local development tooling: throwaway servers (`servers`) and `make run` (`run`)."""
