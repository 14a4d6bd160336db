from glus.model.memory.base import Memory
from glus.model.memory.sam2_bank import SAM2BankState, SAM2MemoryBank

__all__ = ["Memory", "SAM2BankState", "SAM2MemoryBank"]
