"""Telegram adapter (python-telegram-bot 22): commands, raid posts, live edits, chat locks."""

from .adapter import TelegramAdapter

__all__ = ["TelegramAdapter"]
