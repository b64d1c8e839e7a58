#include "test.h"
void suite_train_parity(dm_t *t) { (void)t; }
