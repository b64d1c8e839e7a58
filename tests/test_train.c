#include "test.h"
void suite_train(dm_t *t) { (void)t; }
