# The snapshot's ranking ids: still bigint[] on PostgreSQL (this is a no-op there), JSON text on
# SQLite, where the array type of 0004 could hold nothing.

import annotation.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('annotation', '0005_assignment'),
    ]

    operations = [
        migrations.AlterField(
            model_name='datasetsnapshot',
            name='ranking_ids',
            field=annotation.models.IdArrayField(base_field=models.BigIntegerField(), help_text='Frozen ranking ids, ascending.', size=None),
        ),
    ]
