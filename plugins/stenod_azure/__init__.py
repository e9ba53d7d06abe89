"""Azure AI Translator Document Translation provider for stenod (the synchronous
single-document endpoint and the Blob-Storage-backed batch API)."""

from stenod_azure.provider import AzureTranslatorProvider
from stenod_azure.settings import AzureOptions, AzureSettings

__all__ = ["AzureOptions", "AzureSettings", "AzureTranslatorProvider"]
