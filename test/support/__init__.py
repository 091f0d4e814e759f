"""Code the tests share: model builders, the golden-run helpers, a depth publisher, fixtures."""
