"""Operations reporting and PSP fee reconciliation."""
