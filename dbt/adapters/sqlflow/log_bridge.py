"""Routes the standard-library logger of the dbt-free layers (data, ml) into dbt's own log."""

import logging

from dbt.adapters.events.logging import AdapterLogger

LOGGER_NAME = "dbt_sqlflow"
_adapter_logger = AdapterLogger("Sqlflow")


class _DbtHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            _adapter_logger.warning(message)
        elif record.levelno >= logging.INFO:
            _adapter_logger.info(message)
        else:
            _adapter_logger.debug(message)


def install() -> None:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _DbtHandler) for h in logger.handlers):
        logger.addHandler(_DbtHandler())
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
