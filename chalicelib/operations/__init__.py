"""Operations run on a schedule or at deploy: the reconciler (with retention) and the migrations."""
