"""Vector indexes in Spark: :func:`create_vector_index` embeds a table's text column into a
Parquet index next to the data and re-syncs it embedding only new or changed rows.

The index is Parquet under ``<path>/v<version>`` (default path: the session's warehouse
directory, ``ai_query_vector_indexes/<name>``), with the source's columns, ``__text_md5``,
``__embedding ARRAY<FLOAT>`` and ``__norm`` (its length, so a search divides once); each sync
writes the next version from the previous one and points the temp view ``<name>`` at it.
``SparkAIQuery.sql`` then rewrites ``vector_search(index => '<name>', ...)`` over that view.
"""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ai_query.errors import ConfigError
from ai_query.sql.vector_search import (
    EMBEDDING_COLUMN,
    HASH_COLUMN,
    NORM_COLUMN,
    VectorIndexInfo,
)
from ai_query.tasks import Task
from ai_query.udf.spark import registered
from ai_query.udf.vector_index import SyncResult


def create_vector_index(
    spark: SparkSession,
    name: str,
    source_table: str,
    primary_key: str,
    text_column: str,
    endpoint: str,
    *,
    path: str | None = None,
) -> SyncResult:
    """Create or re-sync the vector index ``name`` over the table ``source_table`` (Spark).

    Raises:
        ConfigError: an endpoint that does not embed, or an index of that name in this session
            built over another table, key or column.
    """
    aq = registered(spark)
    if aq.catalog.task_of(endpoint) != Task.EMBEDDINGS:
        raise ConfigError(f"create_vector_index: {endpoint!r} is not an embeddings endpoint")
    old = aq.vector_indexes.get(name)
    if old is not None and (old.source_table, old.primary_key, old.text_column) != (
        source_table, primary_key, text_column
    ):
        raise ConfigError(
            f"create_vector_index: {name!r} indexes {old.source_table}.{old.text_column}; "
            "pick another name"
        )
    root = path or f"{spark.conf.get('spark.sql.warehouse.dir')}/ai_query_vector_indexes/{name}"
    version = aq.index_versions.get(name, 0)
    if old is not None and old.endpoint != endpoint:
        old = None  # another model: every row is embedded again
    src = spark.table(source_table)
    text = F.col(text_column)
    with_hash = src.withColumn(HASH_COLUMN, F.md5(text.cast("string")))
    previous = (
        spark.read.parquet(f"{root}/v{version}").select(
            F.col(primary_key).alias("__old_key"),
            F.col(HASH_COLUMN).alias("__old_hash"),
            F.col(EMBEDDING_COLUMN).alias("__old_vector"),
        )
        if old is not None
        else None
    )
    todo = with_hash.where(text.isNotNull())
    if previous is not None:
        todo = todo.join(
            previous, (F.col(primary_key) == F.col("__old_key"))
            & (F.col(HASH_COLUMN) == F.col("__old_hash")), "left_anti"
        )
    todo = todo.select(F.col(primary_key).alias("__new_key"), text.cast("string").alias("__t"))
    embedded = todo.count()
    fresh = todo.select(
        "__new_key",
        F.from_json(aq.udfs["ai_query"](F.lit(endpoint), F.col("__t")), "array<float>").alias(
            "__new_vector"
        ),
    )
    out = with_hash.join(fresh, F.col(primary_key) == F.col("__new_key"), "left")
    vector = F.col("__new_vector")
    if previous is not None:
        out = out.join(
            previous, (F.col(primary_key) == F.col("__old_key"))
            & (F.col(HASH_COLUMN) == F.col("__old_hash")), "left"
        )
        vector = F.coalesce(vector, F.col("__old_vector"))
    out = out.select(*[F.col(c) for c in src.columns], F.col(HASH_COLUMN),
                     vector.alias(EMBEDDING_COLUMN))
    out = out.withColumn(
        NORM_COLUMN,
        F.sqrt(F.aggregate(F.transform(EMBEDDING_COLUMN, lambda x: x * x), F.lit(0.0),
                           lambda a, x: a + x)),
    )
    target = f"{root}/v{version + 1}"
    out.write.mode("overwrite").parquet(target)
    index = spark.read.parquet(target)
    index.createOrReplaceTempView(name)
    first = index.where(F.col(EMBEDDING_COLUMN).isNotNull()).select(
        F.size(EMBEDDING_COLUMN)
    ).first()
    dims = int(first[0]) if first is not None else (old.dims if old else 0)
    aq.vector_indexes[name] = VectorIndexInfo(
        name=name, source_table=source_table, primary_key=primary_key, text_column=text_column,
        endpoint=endpoint, dims=dims, columns=tuple(src.columns),
    )
    aq.index_versions[name] = version + 1
    return SyncResult(rows=index.count(), embedded=embedded)
