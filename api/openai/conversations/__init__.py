"""OpenAI's Conversations API (/v1/conversations)."""
